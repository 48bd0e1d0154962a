/* What main.c needs from the board: a file to stream the scenario from, text output, an instruction counter.
 * platform_host.c implements it with stdio, platform_qemu.c with Arm semihosting on QEMU's mps2-an386. Both also
 * give the learner its flash region (tcl_flash_read / tcl_flash_write of tcl_learner.h). */
#ifndef PLATFORM_H
#define PLATFORM_H

#include <stdint.h>

void plat_init(int argc, char **argv);
/* The scenario file: 0 on success. */
int32_t plat_open(const char *path);
int32_t plat_seek(uint32_t offset);
/* Reads n bytes: 0 on success, -1 at the end of the file or on an error. */
int32_t plat_read(void *buf, uint32_t n);
void plat_print(const char *text);
/* Instructions executed so far (0 where the board cannot count them); plat_counting() says if it can. */
uint32_t plat_instructions(void);
int32_t plat_counting(void);
void plat_exit(int32_t status);

#endif /* PLATFORM_H */
