// The fast path of decodeGrey: inflate a PNG's image data with libdeflate,
// undo the row filters and convert to grey in the same pass, while the row
// is in the cache. Only 8-bit RGB and RGBA, not interlaced; pngdecode.go
// checks the chunks and falls back to OpenCV for anything else.

#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>

#include "pnggrey.h"

static inline uint8_t paeth(int a, int b, int c) {
	int p = b - c, q = a - c;
	int pa = abs(p), pb = abs(q), pc = abs(p + q);
	return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

// unfilter undoes one row's filter in place; prev is the row above, already
// unfiltered, or NULL for the first row. bpp is the bytes per pixel.
static int unfilter(int type, uint8_t *row, const uint8_t *prev, size_t n, int bpp) {
	size_t i;
	switch (type) {
	case 0:
		return 0;
	case 1:
		for (i = bpp; i < n; i++)
			row[i] += row[i - bpp];
		return 0;
	case 2:
		if (prev)
			for (i = 0; i < n; i++)
				row[i] += prev[i];
		return 0;
	case 3:
		if (!prev) {
			for (i = bpp; i < n; i++)
				row[i] += row[i - bpp] >> 1;
			return 0;
		}
		for (i = 0; i < (size_t)bpp; i++)
			row[i] += prev[i] >> 1;
		for (; i < n; i++)
			row[i] += (row[i - bpp] + prev[i]) >> 1;
		return 0;
	case 4:
		if (!prev) { // Paeth with an empty row above is Sub
			for (i = bpp; i < n; i++)
				row[i] += row[i - bpp];
			return 0;
		}
		for (i = 0; i < (size_t)bpp; i++)
			row[i] += prev[i];
		for (; i < n; i++)
			row[i] += paeth(row[i - bpp], prev[i], prev[i - bpp]);
		return 0;
	}
	return -1;
}

// grey is OpenCV's BGR2GRAY for 8 bits, as tinycv's imread(IMREAD_COLOR)
// followed by cvtColor computes it.
static void greyRow(const uint8_t *row, uint8_t *out, int width, int channels) {
	for (int x = 0; x < width; x++) {
		const uint8_t *p = row + (size_t)x * channels;
		out[x] = (uint8_t)((9798u * p[0] + 19235u * p[1] + 3735u * p[2] + 16384u) >> 15);
	}
}

// jetqa_png_grey inflates zdata (the concatenated IDAT chunks) into raw
// (exactly height rows of 1 + width*channels bytes) and writes the grey
// image, width*height bytes, to grey. It returns 0 on success, and
// non-zero, having written nothing valid, when the data is not exactly one
// well-formed zlib stream of that size with valid filter types.
int jetqa_png_grey(const uint8_t *zdata, size_t zlen, uint8_t *raw, size_t rawlen,
                   int width, int height, int channels, uint8_t *grey) {
	size_t stride = 1 + (size_t)width * channels;
	if (rawlen != stride * (size_t)height)
		return -1;
	// libpng honours the window size in the zlib header; libdeflate does
	// not check it, so only the usual 32K window is taken here.
	if (zlen < 2 || (zdata[0] & 0x0f) != 8 || (zdata[0] >> 4) != 7)
		return -1;
	struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
	if (!d)
		return -1;
	size_t in = 0;
	enum libdeflate_result r = libdeflate_zlib_decompress_ex(d, zdata, zlen, raw, rawlen, &in, NULL);
	libdeflate_free_decompressor(d);
	if (r != LIBDEFLATE_SUCCESS || in != zlen)
		return -1;
	const uint8_t *prev = NULL;
	for (int y = 0; y < height; y++) {
		uint8_t *row = raw + (size_t)y * stride;
		if (unfilter(row[0], row + 1, prev, stride - 1, channels))
			return -1;
		greyRow(row + 1, grey + (size_t)y * width, width, channels);
		prev = row + 1;
	}
	return 0;
}
