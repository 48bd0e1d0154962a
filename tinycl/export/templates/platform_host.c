/* The host build's board: stdio for the scenario and the output, a file (argv[3], default state.bin) as flash. */
#include <stdio.h>
#include <stdlib.h>

#include "platform.h"
#include "tcl_learner.h"

static FILE *scenario;
static const char *flash_path = "state.bin";

void plat_init(int argc, char **argv) {
    if (argc > 3) flash_path = argv[3];
}

int32_t plat_open(const char *path) { return (scenario = fopen(path, "rb")) != NULL ? 0 : -1; }
int32_t plat_seek(uint32_t offset) { return fseek(scenario, (long)offset, SEEK_SET) == 0 ? 0 : -1; }
int32_t plat_read(void *buf, uint32_t n) { return fread(buf, 1, n, scenario) == n ? 0 : -1; }
void plat_print(const char *text) { fputs(text, stdout); fflush(stdout); }
uint32_t plat_instructions(void) { return 0; }
int32_t plat_counting(void) { return 0; }
void plat_exit(int32_t status) { exit(status); }

int32_t tcl_flash_read(uint32_t offset, uint8_t *data, uint32_t n) {
    FILE *f = fopen(flash_path, "rb");
    if (!f) return -1;
    const int32_t ok = fseek(f, (long)offset, SEEK_SET) == 0 && fread(data, 1, n, f) == n;
    fclose(f);
    return ok ? 0 : -1;
}

int32_t tcl_flash_write(uint32_t offset, const uint8_t *data, uint32_t n) {
    FILE *f = fopen(flash_path, "r+b");
    if (!f) f = fopen(flash_path, "w+b");
    if (!f) return -1;
    const int32_t ok = fseek(f, (long)offset, SEEK_SET) == 0 && fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}
