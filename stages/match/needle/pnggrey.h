#include <stddef.h>
#include <stdint.h>

int jetqa_png_grey(const uint8_t *zdata, size_t zlen, uint8_t *raw, size_t rawlen,
                   int width, int height, int channels, uint8_t *grey);
