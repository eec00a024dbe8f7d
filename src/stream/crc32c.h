/* CRC-32C (Castagnoli), the checksum of every stream record.
 *
 * Polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final
 * XOR 0xFFFFFFFF, as in iSCSI, ext4 and SSE4.2's crc32 instruction:
 * crc32c("123456789") = 0xE3069283. Computed with that instruction where
 * the CPU has it (tens of GB/s: a model's weights pass through every
 * stage), else with slicing-by-8 tables. */
#ifndef SG_CRC32C_H
#define SG_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over len bytes: crc32c(crc32c(0, a), b) is the
 * checksum of a followed by b. */
uint32_t sg_crc32c(uint32_t crc, const void *data, size_t len);

/* The table version alone, so a test can check both give one answer. */
uint32_t sg_crc32c_portable(uint32_t crc, const void *data, size_t len);

#endif
