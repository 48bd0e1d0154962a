/* Reset and vector table for a Cortex-M4F on QEMU's mps2-an386: copy .data, zero .bss, enable the FPU, run main. */
#include <stdint.h>
#include <string.h>

#include "platform.h"

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(int argc, char **argv);
void SysTick_Handler(void);

void Reset_Handler(void) {
    memcpy(&_sdata, &_sidata, (size_t)((char *)&_edata - (char *)&_sdata));
    memset(&_sbss, 0, (size_t)((char *)&_ebss - (char *)&_sbss));
    *(volatile uint32_t *)0xe000ed88u |= 0xfu << 20; /* CPACR: full access to CP10 and CP11 (the FPU) */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    plat_exit(main(0, 0));
}

void Fault_Handler(void) {
    plat_print("error: fault\n");
    plat_exit(1);
}

typedef void (*handler)(void);
__attribute__((section(".isr_vector"), used)) const uintptr_t vectors[16] = {
    (uintptr_t)&_estack, (uintptr_t)Reset_Handler, (uintptr_t)Fault_Handler, (uintptr_t)Fault_Handler,
    (uintptr_t)Fault_Handler, (uintptr_t)Fault_Handler, (uintptr_t)Fault_Handler, 0, 0, 0, 0,
    (uintptr_t)Fault_Handler, (uintptr_t)Fault_Handler, 0, (uintptr_t)Fault_Handler, (uintptr_t)SysTick_Handler};
