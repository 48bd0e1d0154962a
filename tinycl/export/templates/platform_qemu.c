/* QEMU's mps2-an386 (Cortex-M4F) board: Arm semihosting for the scenario file and the output, SysTick for an
 * instruction count, and the learner's flash slots in a section (.state) that startup code leaves untouched. On a
 * real board, tcl_flash_read / tcl_flash_write would program its flash instead.
 *
 * Instruction count: run QEMU with -icount shift=0 (one instruction = 1 ns of virtual time); SysTick then counts
 * the 25 MHz core clock, one tick per 40 instructions, and its wrap-arounds are counted in SysTick_Handler. */
#include <string.h>

#include "platform.h"
#include "tcl_learner.h"
#include "tcl_model.h"

#define STATE_BYTES TCL_STATE_REGION_BYTES

enum { SYS_OPEN = 0x01, SYS_WRITE0 = 0x04, SYS_READ = 0x06, SYS_SEEK = 0x0a, SYS_EXIT = 0x18 };

static int32_t semihost(int32_t op, void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static int32_t handle = -1;
static volatile uint32_t wraps;
static uint8_t state_region[STATE_BYTES] __attribute__((section(".state")));

#define SYST_CSR (*(volatile uint32_t *)0xe000e010u)
#define SYST_RVR (*(volatile uint32_t *)0xe000e014u)
#define SYST_CVR (*(volatile uint32_t *)0xe000e018u)

void SysTick_Handler(void) { wraps = wraps + 1u; }

void plat_init(int argc, char **argv) {
    (void)argc;
    (void)argv;
    SYST_RVR = 0x00ffffffu;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* enable, interrupt on wrap, core clock */
}

int32_t plat_open(const char *path) {
    uint32_t args[3] = {(uint32_t)(uintptr_t)path, 1u /* "rb" */, (uint32_t)strlen(path)};
    handle = semihost(SYS_OPEN, args);
    return handle >= 0 ? 0 : -1;
}

int32_t plat_seek(uint32_t offset) {
    uint32_t args[2] = {(uint32_t)handle, offset};
    return semihost(SYS_SEEK, args) == 0 ? 0 : -1;
}

int32_t plat_read(void *buf, uint32_t n) {
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, n};
    return semihost(SYS_READ, args) == 0 ? 0 : -1; /* returns the bytes not read */
}

void plat_print(const char *text) { semihost(SYS_WRITE0, (void *)(uintptr_t)text); }

uint32_t plat_instructions(void) {
    uint32_t w, v;
    do {
        w = wraps;
        v = SYST_CVR;
    } while (w != wraps);
    return (w * 0x01000000u + (0x00ffffffu - v)) * 40u;
}

int32_t plat_counting(void) { return 1; }

void plat_exit(int32_t status) {
    for (;;) semihost(SYS_EXIT, (void *)(uintptr_t)(status == 0 ? 0x20026u : 0x20024u));
}

int32_t tcl_flash_read(uint32_t offset, uint8_t *data, uint32_t n) {
    if (offset > STATE_BYTES || n > STATE_BYTES - offset) return -1;
    memcpy(data, state_region + offset, n);
    return 0;
}

int32_t tcl_flash_write(uint32_t offset, const uint8_t *data, uint32_t n) {
    if (offset > STATE_BYTES || n > STATE_BYTES - offset) return -1;
    memcpy(state_region + offset, data, n);
    return 0;
}
