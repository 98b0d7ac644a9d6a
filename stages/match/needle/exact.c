// The exact search behind exact.go: sums of squared differences in
// integers, pruned with lower bounds from block sums (successive
// elimination) and by stopping a sum once it is too big to matter; and
// the same choice made from approximate sums, for fft.go.

#include <math.h>
#include <stdlib.h>

#include "exact.h"

// The integral image is of 32-bit sums that wrap around: the sum over a
// rectangle is still exact when it is below 2³².

// Costs, in pixel operations, for the budget: looking up a block sum in
// the integral image is about as slow as 8 pixels of a sum of squared
// differences, a row of that sum has about 8 pixels' overhead.
// The bound with the spreads costs two lookups and a square root more.
enum { BLOCK_COST = 8, SPREAD_COST = 24, ROW_COST = 8 };

// ssd is the sum of squared differences of the template at s, stopping
// early (with a result above stop) once it is above stop. It adds the rows
// up in the order rows gives, the rows that vary most first, so that a
// position where the template is not stops soon.
static int64_t ssd(const uint8_t *s, int stride, const uint8_t *t, int tw, int th, const int *rows,
                   int64_t stop, int64_t *work) {
	int64_t sum = 0;
	for (int i = 0; i < th; i++) {
		int y = rows[i];
		const uint8_t *a = s + (size_t)y * stride, *b = t + (size_t)y * tw;
		int32_t row = 0; // 255² · 16384 < 2³¹
		for (int x = 0; x < tw; x++) {
			int d = (int)a[x] - (int)b[x];
			row += d * d;
		}
		sum += row;
		if (sum > stop) {
			*work += (int64_t)(i + 1) * (tw + ROW_COST);
			return sum;
		}
	}
	*work += (int64_t)th * (tw + ROW_COST);
	return sum;
}

typedef struct {
	int64_t key;
	int row;
} rowKey;

static int byKeyDescending(const void *a, const void *b) {
	const rowKey *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? 1 : -1;
	return x->row - y->row;
}

// rowOrder orders the template's rows by their variance, largest first.
static int *rowOrder(const uint8_t *tpl, int tw, int th) {
	rowKey *keys = malloc(sizeof(rowKey) * th);
	int *rows = malloc(sizeof(int) * th);
	if (!keys || !rows) {
		free(keys);
		free(rows);
		return NULL;
	}
	for (int y = 0; y < th; y++) {
		int64_t s = 0, s2 = 0;
		for (int x = 0; x < tw; x++) {
			int v = tpl[(size_t)y * tw + x];
			s += v, s2 += v * v;
		}
		keys[y].key = s2 * tw - s * s; // tw² · variance
		keys[y].row = y;
	}
	qsort(keys, th, sizeof(rowKey), byKeyDescending);
	for (int i = 0; i < th; i++)
		rows[i] = keys[i].row;
	free(keys);
	return rows;
}

// A level of lower bounds: the template cut into gx·gy blocks. Over a
// block of k pixels the sum of squared differences is at least
// k·(mean of screen − mean of template)² + k·(σ of screen − σ of template)²
// (split each side into its mean and the rest; the rests differ at least
// by their norms), that is (d² + (√vs − √vt)²) / k with d the difference of
// the sums and v = k·(sum of squares) − sum² for each side. The first
// term alone is what the sums bound; the second makes the bound nearly
// exact where a template of sparse strokes (text) lies on a flat screen.
typedef struct {
	int gx, gy;
	int *xs, *ys;   // block edges, gx+1 and gy+1 of them
	int64_t *tsum;  // the template's block sums
	int64_t *tsq;   // and sums of squares
	double *tsd;    // √v of the template's blocks
	double *inv;    // 1/k of each block
	int64_t *k;     // pixels of each block
	int *order;     // the blocks, the template's most varied first
	int64_t kmax;   // the largest block's pixel count
} level;

static int makeLevel(level *l, int g, const uint8_t *tpl, int tw, int th) {
	l->gx = g < tw ? g : tw;
	l->gy = g < th ? g : th;
	size_t blocks = (size_t)l->gx * l->gy;
	l->xs = malloc(sizeof(int) * (l->gx + 1));
	l->ys = malloc(sizeof(int) * (l->gy + 1));
	l->tsum = calloc(blocks, sizeof(int64_t));
	l->tsq = calloc(blocks, sizeof(int64_t));
	l->tsd = calloc(blocks, sizeof(double));
	l->inv = calloc(blocks, sizeof(double));
	l->k = calloc(blocks, sizeof(int64_t));
	l->order = calloc(blocks, sizeof(int));
	if (!l->xs || !l->ys || !l->tsum || !l->tsq || !l->tsd || !l->inv || !l->k || !l->order)
		return -1;
	for (int i = 0; i <= l->gx; i++)
		l->xs[i] = (int)((int64_t)i * tw / l->gx);
	for (int i = 0; i <= l->gy; i++)
		l->ys[i] = (int)((int64_t)i * th / l->gy);
	l->kmax = 0;
	for (int by = 0; by < l->gy; by++)
		for (int bx = 0; bx < l->gx; bx++) {
			int64_t s = 0, q = 0;
			for (int y = l->ys[by]; y < l->ys[by + 1]; y++)
				for (int x = l->xs[bx]; x < l->xs[bx + 1]; x++) {
					int v = tpl[(size_t)y * tw + x];
					s += v, q += v * v;
				}
			int64_t k = (int64_t)(l->xs[bx + 1] - l->xs[bx]) * (l->ys[by + 1] - l->ys[by]);
			size_t b = (size_t)by * l->gx + bx;
			l->tsum[b] = s;
			l->tsq[b] = q;
			l->tsd[b] = sqrt((double)(k * q - s * s));
			l->inv[b] = 1.0 / (double)k;
			l->k[b] = k;
			if (k > l->kmax)
				l->kmax = k;
		}
	for (size_t b = 0; b < blocks; b++) { // insertion sort: at most 64
		size_t i = b;
		for (; i > 0 && l->tsd[l->order[i - 1]] < l->tsd[b]; i--)
			l->order[i] = l->order[i - 1];
		l->order[i] = (int)b;
	}
	return 0;
}

static void freeLevel(level *l) {
	free(l->xs);
	free(l->ys);
	free(l->tsum);
	free(l->tsq);
	free(l->tsd);
	free(l->inv);
	free(l->k);
	free(l->order);
}

// Bounds are computed in float64 and trusted to this relative error:
// each term is exact to about 2⁻⁵⁰ of the total, so this is generous.
#define BOUND_SLACK (1 - 1e-9)

// above reports whether the level's lower bound from the sums alone (the
// cheap part of the bound) at (px,py) is above stop. ii is the window's
// integral image, w1 columns wide.
static int above(const level *l, const uint32_t *ii, size_t w1, int px, int py, int64_t stop, int64_t *work) {
	int64_t sum = 0, lim = stop * l->kmax;
	for (int by = 0; by < l->gy; by++) {
		const uint32_t *r0 = ii + (size_t)(py + l->ys[by]) * w1, *r1 = ii + (size_t)(py + l->ys[by + 1]) * w1;
		for (int bx = 0; bx < l->gx; bx++) {
			int x0 = px + l->xs[bx], x1 = px + l->xs[bx + 1];
			int64_t d = (int64_t)(uint32_t)(r1[x1] - r1[x0] - r0[x1] + r0[x0]) - l->tsum[by * l->gx + bx];
			sum += d * d;
		}
		if (sum > lim) {
			*work += (int64_t)(by + 1) * l->gx * BLOCK_COST;
			return 1;
		}
	}
	*work += (int64_t)l->gy * l->gx * BLOCK_COST;
	return 0;
}

// flatSSD is the sum of squared differences of k template pixels (their
// sum ts, their sum of squares tq) with a screen of one value c there,
// from the screen's sum s = k·c: Σt² − 2c·Σt + k·c².
static inline int64_t flatSSD(int64_t tq, int64_t ts, int64_t s, int64_t k) {
	int64_t c = s / k;
	return tq - 2 * c * ts + c * c * k;
}

// blockSSD is the sum of squared differences at (px,py) (s is the screen
// there, t the template) block by block of the level, or a value above
// stop. Where the screen is one value over a block, the block's sum is
// flatSSD's, from the integral images; the other blocks are
// summed pixel by pixel, and the sum stops as soon as what is summed plus
// the lower bounds of the blocks left is above stop. On screens of flat
// colours this looks at few pixels, and where a tie must be settled
// exactly it is cheaper than ssd.
static int64_t blockSSD(const level *l, const uint32_t *ii, const uint32_t *iq, size_t w1, int px, int py,
                        const uint8_t *s, int stride, const uint8_t *t, int tw, int th, const int *rows, int64_t stop,
                        int64_t *work) {
	enum { MAXB = 64 }; // the blocks of an 8x8 level
	int pending[MAXB];
	double bounds[MAXB];
	int np = 0, blocks = l->gx * l->gy;
	int64_t sum = 0;
	double lower = 0;
	for (int i = 0; i < blocks; i++) {
		int b = l->order[i], by = b / l->gx, bx = b % l->gx;
		size_t y0 = (size_t)(py + l->ys[by]) * w1, y1 = (size_t)(py + l->ys[by + 1]) * w1;
		size_t x0 = px + l->xs[bx], x1 = px + l->xs[bx + 1];
		int64_t bs = (int64_t)(uint32_t)(ii[y1 + x1] - ii[y1 + x0] - ii[y0 + x1] + ii[y0 + x0]);
		int64_t bq = (int64_t)(uint32_t)(iq[y1 + x1] - iq[y1 + x0] - iq[y0 + x1] + iq[y0 + x0]);
		int64_t k = l->k[b], v = k * bq - bs * bs;
		if (v == 0) {
			sum += flatSSD(l->tsq[b], l->tsum[b], bs, k);
		} else {
			int64_t d = bs - l->tsum[b];
			double sd = sqrt((double)v) - l->tsd[b];
			bounds[np] = ((double)(d * d) + sd * sd) * l->inv[b];
			lower += bounds[np];
			pending[np++] = b;
		}
	}
	*work += (int64_t)blocks * SPREAD_COST;
	// Nothing flat: the rows, most varied first, stop sooner.
	if (np == blocks)
		return (double)lower * BOUND_SLACK > (double)stop ? stop + 1 : ssd(s, stride, t, tw, th, rows, stop, work);
	if ((double)sum + lower * BOUND_SLACK > (double)stop)
		return stop + 1;
	for (int i = 0; i < np; i++) {
		int b = pending[i], by = b / l->gx, bx = b % l->gx;
		int x0 = l->xs[bx], w = l->xs[bx + 1] - x0;
		for (int y = l->ys[by]; y < l->ys[by + 1]; y++) {
			const uint8_t *a = s + (size_t)y * stride + x0, *c = t + (size_t)y * tw + x0;
			int32_t row = 0;
			for (int x = 0; x < w; x++) {
				int d = (int)a[x] - (int)c[x];
				row += d * d;
			}
			sum += row;
		}
		*work += l->k[b] + (int64_t)(l->ys[by + 1] - l->ys[by]) * ROW_COST;
		lower -= bounds[i];
		if ((double)sum + lower * BOUND_SLACK > (double)stop)
			return sum > stop ? sum : stop + 1;
	}
	return sum;
}

// jetqa_tie_slack bounds, with room to spare, how far apart two sums of
// squared differences may be and still come out of OpenCV's float32
// matchTemplate, as tinycv computes them, in either order: twice the
// error of one. Its error comes from the float32 DFTs of the correlation
// and grows with the norms of the window (wsq, its sum of squares) and of
// the template (tsq); on real and random pictures it stays below
// 8·2⁻²⁴·(√(wsq·tsq) + tsq), this takes 8 times that (tie_test.go).
int64_t jetqa_tie_slack(int64_t wsq, int64_t tsq) {
	double u = ldexp(1, -24);
	return 2 * (int64_t)ceil(64 * u * (sqrt((double)wsq * (double)tsq) + (double)tsq)) + 4;
}

// nearList is the positions whose sums are within the slack of the
// candidates' limit: when one besides the position picked is left at the
// end, float32 sums could have picked another, a tie for tinycv_pick.
enum { NEAR = 32 };
typedef struct {
	int n, overflow;
	int x[NEAR], y[NEAR];
	int64_t v[NEAR];
} nearList;

// addNear notes (px,py) with sum v; bound is what no sum near the final
// smallest exceeds, and drops the notes above it when the list is full.
static void addNear(nearList *l, int px, int py, int64_t v, int64_t bound) {
	if (l->n == NEAR) {
		int k = 0;
		for (int i = 0; i < l->n; i++)
			if (l->v[i] <= bound)
				l->x[k] = l->x[i], l->y[k] = l->y[i], l->v[k] = l->v[i], k++;
		l->n = k;
		if (k == NEAR) {
			l->overflow = 1;
			return;
		}
	}
	l->x[l->n] = px, l->y[l->n] = py, l->v[l->n] = v, l->n++;
}

// tied reports whether a position other than (bx,by) has a sum of at
// most bound, or might have.
static int tied(const nearList *l, int bx, int by, int64_t bound) {
	if (l->overflow)
		return 1;
	for (int i = 0; i < l->n; i++)
		if (l->v[i] <= bound && (l->x[i] != bx || l->y[i] != by))
			return 1;
	return 0;
}

// The levels: the whole template, then 3x3 and 8x8 blocks.
#define LEVELS 3
static const int grids[LEVELS] = {1, 3, 8};

// jetqa_exact_search finds the template (tw x th, continuous) in the window
// (ww x wh at screen, rows stride apart) as tinycv's search_TEMPLATE does,
// with exact sums of squared differences: (ox,oy) is the area's own
// position in the window, (qx,qy) the point tinycv measures distances to.
// ii and iq have room for the window's integral images of values and of
// squares, (ww+1)·(wh+1) each.
// It gives up with JETQA_TOO_COSTLY once it has spent budget pixel
// operations, and returns JETQA_NOTHING_CLOSE when no position has a mean
// squared difference below 382, where the similarity is 0. With
// JETQA_FOUND, out->tied says whether another position's sum is within
// jetqa_tie_slack of the candidates' limit, so that tinycv's float32 sums
// could pick another: then only tinycv_pick knows which it picks. Even a
// picture found exactly at the area's own position is looked for
// elsewhere, as tinycv's value there need not be exactly 0.
int jetqa_exact_search(const uint8_t *screen, int stride, int ww, int wh,
                       const uint8_t *tpl, int tw, int th, int ox, int oy,
                       int qx, int qy, int64_t budget, uint32_t *ii, uint32_t *iq, jetqa_match *out) {
	int nx = ww - tw + 1, ny = wh - th + 1;
	int64_t n = (int64_t)tw * th;
	int64_t work = 0;
	int status = JETQA_TOO_COSTLY;
	level levels[LEVELS] = {0};
	int *rows = rowOrder(tpl, tw, th);
	if (!rows)
		goto done;
	int64_t v0 = ssd(screen + (size_t)oy * stride + ox, stride, tpl, tw, th, rows, INT64_MAX, &work);
	int64_t zero = 382 * n; // a mean squared difference of 382: similarity 0
	// Sums of the template's size must fit in 31 bits (the integral image
	// wraps around at 32); the largest needle areas are left to OpenCV.
	if (255 * n >= (int64_t)1 << 31)
		goto done;

	size_t w1 = (size_t)ww + 1;
	for (int i = 0; i < LEVELS; i++)
		if (makeLevel(&levels[i], grids[i], tpl, tw, th))
			goto done;
	// Sums of squares wrap around at 32 bits too, so they serve templates
	// below 2³² / 255² pixels (256x256 fits): those can be settled over
	// flat parts of the screen without reading pixels (the sum is exact
	// from the sums) and bounded with the spread of their blocks. Where a
	// block is a few dozen pixels, summing them costs less than that.
	int squares = 65025 * n < (int64_t)1 << 32;
	int blocks = squares && n >= 4096;
	for (size_t x = 0; x < w1; x++)
		ii[x] = 0, iq[x] = 0;
	int64_t wsq = 0;
	for (int y = 0; y < wh; y++) {
		const uint8_t *row = screen + (size_t)y * stride;
		uint32_t *prev = ii + (size_t)y * w1, *cur = prev + w1;
		uint32_t acc = 0;
		cur[0] = 0;
		for (int x = 0; x < ww; x++) {
			acc += row[x];
			cur[x + 1] = prev[x + 1] + acc;
		}
		uint32_t *qprev = iq + (size_t)y * w1, *qcur = qprev + w1;
		uint32_t qacc = 0;
		qcur[0] = 0;
		for (int x = 0; x < ww; x++) {
			qacc += (uint32_t)row[x] * row[x];
			qcur[x + 1] = qprev[x + 1] + qacc;
		}
		// The row's squares, exact: below 255²·2¹⁶ for rows of fewer
		// than 65536 pixels, which every screen has.
		wsq += (int64_t)qacc;
	}
	work += 2 * (int64_t)ww * wh;
	int64_t slack = out->slack = jetqa_tie_slack(wsq, levels[0].tsq[0]);

	// Look first where the template's sum fits best: where it is found,
	// that bounds everything else tightly from the start.
	int64_t tsum = levels[0].tsum[0];
	int64_t known = v0 < zero ? v0 : zero;
	enum { K = 32 };
	int64_t heap[K]; // a max-heap of |difference of sums| << 32 | position
	int size = 0;
	for (int py = 0; v0 > 0 && py < ny; py++) {
		const uint32_t *r0 = ii + (size_t)py * w1, *r1 = ii + (size_t)(py + th) * w1;
		for (int px = 0; px < nx; px++) {
			int64_t d = (int64_t)(uint32_t)(r1[px + tw] - r1[px] - r0[px + tw] + r0[px]) - tsum;
			int64_t key = ((d < 0 ? -d : d) << 32) | ((int64_t)py * nx + px);
			if (size < K) {
				int i = size++;
				for (; i > 0 && heap[(i - 1) / 2] < key; i = (i - 1) / 2)
					heap[i] = heap[(i - 1) / 2];
				heap[i] = key;
			} else if (key < heap[0]) {
				int i = 0;
				for (;;) {
					int c = 2 * i + 1;
					if (c >= K)
						break;
					if (c + 1 < K && heap[c + 1] > heap[c])
						c++;
					if (heap[c] <= key)
						break;
					heap[i] = heap[c];
					i = c;
				}
				heap[i] = key;
			}
		}
	}
	work += (int64_t)nx * ny;
	for (int i = 0; i < size; i++) {
		int64_t idx = heap[i] & 0xffffffff;
		int px = (int)(idx % nx), py = (int)(idx / nx);
		int64_t v = ssd(screen + (size_t)py * stride + px, stride, tpl, tw, th, rows, known + 10, &work);
		if (v < known)
			known = v;
	}

	// tinycv's scan: limit is the smallest value so far + 10; a smaller
	// value starts the candidates afresh, and of the candidates the one
	// closest to (qx,qy) wins, the first on equal distances. A position
	// whose value is above base + 10 cannot be a candidate at the end:
	// base is a value found somewhere, or the similarity-0 line. Those up
	// to the slack above that are noted for the tie check.
	int64_t limit = v0 + 10, min = v0;
	nearList near = {0};
	int64_t start = work;
	int bx = -1, by = -1;
	int64_t best = 0, bestDist = -1;
	int64_t tsq = levels[0].tsq[0];
	for (int py = 0; py < ny; py++) {
		const uint32_t *r0 = ii + (size_t)py * w1, *r1 = ii + (size_t)(py + th) * w1;
		const uint32_t *q0 = iq + (size_t)py * w1, *q1 = iq + (size_t)(py + th) * w1;
		for (int px = 0; px < nx; px++) {
			int64_t base = min < known ? min : known, cut = base + 10 + slack;
			int64_t s = (int64_t)(uint32_t)(r1[px + tw] - r1[px] - r0[px + tw] + r0[px]);
			int64_t d = s - tsum;
			if (d * d > cut * n)
				continue;
			int64_t v;
			if (squares && (int64_t)(uint32_t)(q1[px + tw] - q1[px] - q0[px + tw] + q0[px]) * n == s * s) {
				// The screen is one value under the template here: the
				// sum comes without looking at pixels.
				v = flatSSD(tsq, tsum, s, n);
				work += SPREAD_COST;
			} else {
				int pruned = 0;
				for (int i = 1; i < LEVELS && !pruned; i++)
					pruned = above(&levels[i], ii, w1, px, py, cut, &work);
				if (pruned)
					continue;
				const uint8_t *at = screen + (size_t)py * stride + px;
				if (px == ox && py == oy)
					v = v0;
				else if (blocks)
					v = blockSSD(&levels[LEVELS - 1], ii, iq, w1, px, py, at, stride, tpl, tw, th, rows, cut, &work);
				else
					v = ssd(at, stride, tpl, tw, th, rows, cut, &work);
			}
			if (work > budget)
				goto done;
			if (v > cut)
				continue;
			addNear(&near, px, py, v, cut);
			if (v0 == 0 && (px != ox || py != oy))
				goto found; // tinycv's shortcut or not: a tie
			if (v > base + 10)
				continue;
			int64_t dx = px - qx, dy = py - qy, dist = dx * dx + dy * dy;
			if (v + 10 < limit) {
				limit = v + 10, min = v;
				bx = px, by = py, best = v, bestDist = dist;
			} else if (bestDist < 0 || dist < bestDist) {
				bx = px, by = py, best = v, bestDist = dist;
			}
		}
		work += nx;
		// Give up early where the whole scan would cost several times
		// the budget, as far as the rows scanned so far tell: the work is
		// uneven, a dialog costs more than the background around it.
		if (work > budget || start + (work - start) / (py + 1) * ny > 4 * budget)
			goto done;
	}
found:
	if (v0 == 0) { // tinycv's shortcut: exactly the same at the area's own position
		out->x = ox, out->y = oy, out->ssd = 0;
		out->tied = tied(&near, ox, oy, 10 + slack);
		status = JETQA_FOUND;
	} else if (bestDist < 0 || min >= zero) {
		status = JETQA_NOTHING_CLOSE;
	} else {
		out->x = bx, out->y = by, out->ssd = best;
		out->tied = tied(&near, bx, by, min + 10 + slack);
		status = JETQA_FOUND;
	}
done:
	out->work = work;
	for (int i = 0; i < LEVELS; i++)
		freeLevel(&levels[i]);
	free(rows);
	return status;
}

// jetqa_fft_bound bounds the error of a cross-correlation computed with
// float64 DFTs of size pw x ph, turned into a sum of squared differences:
// twice the error of the correlation, plus the rounding of the sum. The
// DFT's error is at most c·log2(size)·u·‖x‖₂ for its input x, in the
// 2-norm of the whole result, with u = 2⁻⁵³ and c a small constant for
// OpenCV's mixed radixes (taken as 5, generously); through the two
// forward DFTs, the product and the inverse DFT that makes at most
// 3·c·log2(size)·u·(‖window‖₂·‖tpl‖₁ + ‖window‖₁·‖tpl‖₂) for every
// position. On real and random pictures the errors are far below it
// (fft_test.go).
double jetqa_fft_bound(int pw, int ph, int64_t wsum, int64_t wsq, int64_t tsum, int64_t tsq) {
	double u = ldexp(1, -53), c = 5;
	double corr = 3 * c * log2((double)pw * ph) * u * (sqrt((double)wsq) * tsum + wsum * sqrt((double)tsq));
	return 2 * corr + 4 * u * (double)(wsq + tsq);
}

// approxTied reports whether a position other than (bx,by) may have a sum
// of at most limit, as far as the approximate sums in a tell.
static int approxTied(const double *a, int astride, int nx, int ny, int bx, int by, double bound, int64_t limit) {
	for (int py = 0; py < ny; py++) {
		const double *row = a + (size_t)py * astride;
		for (int px = 0; px < nx; px++)
			if (row[px] - bound <= limit && (px != bx || py != by))
				return 1;
	}
	return 0;
}

// jetqa_fft_search is jetqa_exact_search on approximate sums of squared
// differences: a holds, for each position in the window, the template's
// cross-correlation with the window, the result of float64 DFTs of size
// pw x ph (see jetqa_fft_bound), astride values a row. It turns them into
// approximate sums, overwriting a, and computes exact sums only at the
// positions that those cannot rule out: where the smallest sum may be,
// the first position with it in scan order, and the candidates closest
// to (qx,qy). So it picks what the exact search picks. It gives up with
// JETQA_TOO_COSTLY once the exact sums have cost budget pixel operations,
// or when the approximate sums contradict the exact ones (bound too
// small).
int jetqa_fft_search(double *a, int astride, int pw, int ph, const uint8_t *screen, int stride, int ww, int wh,
                     const uint8_t *tpl, int tw, int th, int ox, int oy, int qx, int qy,
                     int64_t budget, jetqa_match *out) {
	int nx = ww - tw + 1, ny = wh - th + 1;
	int64_t n = (int64_t)tw * th;
	int64_t work = 0;
	int status = JETQA_TOO_COSTLY;
	int *rows = rowOrder(tpl, tw, th);
	int64_t *col = calloc(ww, sizeof(int64_t));
	if (!rows || !col)
		goto done;
#define AT(px, py) (screen + (size_t)(py) * stride + (px))
	int64_t v0 = ssd(AT(ox, oy), stride, tpl, tw, th, rows, INT64_MAX, &work);

	// Sum of squared differences = Σ screen² − 2·correlation + Σ tpl²,
	// the first over the template at each position, from column sums.
	int64_t tsum = 0, tsq = 0, wsum = 0, wsq = 0;
	for (int64_t i = 0; i < n; i++)
		tsum += tpl[i], tsq += (int64_t)tpl[i] * tpl[i];
	for (int y = 0; y < wh; y++)
		for (int x = 0; x < ww; x++) {
			int v = AT(x, y)[0];
			wsum += v, wsq += v * v;
			if (y < th)
				col[x] += v * v;
		}
	double bound = jetqa_fft_bound(pw, ph, wsum, wsq, tsum, tsq);
	double amin = INFINITY;
	int64_t amini = 0;
	for (int py = 0; py < ny; py++) {
		if (py > 0)
			for (int x = 0; x < ww; x++) {
				int add = AT(x, py + th - 1)[0], drop = AT(x, py - 1)[0];
				col[x] += add * add - drop * drop;
			}
		int64_t s = 0;
		for (int x = 0; x < tw; x++)
			s += col[x];
		double *row = a + (size_t)py * astride;
		for (int px = 0; px < nx; px++) {
			if (px > 0)
				s += col[px + tw - 1] - col[px - 1];
			double v = (double)(s + tsq) - 2 * row[px];
			row[px] = v;
			if (v < amin)
				amin = v, amini = (int64_t)py * nx + px;
		}
	}
	work += (int64_t)ww * wh;
	int64_t slack = out->slack = jetqa_tie_slack(wsq, tsq);
	if (v0 == 0) { // tinycv's shortcut, unless its value there is not 0
		out->x = ox, out->y = oy, out->ssd = 0;
		out->tied = approxTied(a, astride, nx, ny, ox, oy, bound, 10 + slack);
		status = JETQA_FOUND;
		goto done;
	}
	int64_t zero = 382 * n;
	if (amin - bound >= zero) {
		status = JETQA_NOTHING_CLOSE;
		goto done;
	}

	// The smallest sum: no position's is below amin − bound; start from
	// where amin is and look at every position whose approximate sum
	// leaves room for one below the smallest known.
	int64_t min = ssd(AT(amini % nx, amini / nx), stride, tpl, tw, th, rows, v0, &work);
	if (min > v0)
		min = v0;
	double lowest = ceil(amin - bound);
	for (int py = 0; py < ny && min > lowest; py++)
		for (int px = 0; px < nx && min > lowest; px++)
			if (a[(size_t)py * astride + px] - bound <= min - 1) {
				int64_t v = ssd(AT(px, py), stride, tpl, tw, th, rows, min - 1, &work);
				if (v < min)
					min = v;
				if (work > budget)
					goto done;
			}
	if (min >= zero) {
		status = JETQA_NOTHING_CLOSE;
		goto done;
	}

	// tinycv's scan drops the candidates before the position where it
	// last found a smaller value: the first position with the smallest
	// sum, unless that is the value at the area's own position.
	int sx = 0, sy = 0;
	if (min < v0) {
		sy = -1;
		for (int py = 0; py < ny && sy < 0; py++) {
			const double *row = a + (size_t)py * astride;
			for (int px = 0; px < nx; px++)
				if (row[px] - bound <= min && ssd(AT(px, py), stride, tpl, tw, th, rows, min, &work) == min) {
					sx = px, sy = py;
					break;
				}
			if (work > budget)
				goto done;
		}
		if (sy < 0)
			goto done; // the bound did not hold
	}

	// Of the candidates from there, within 10 of the smallest sum, the
	// one closest to (qx,qy) wins, the first on equal distances: look at
	// the closest position that may be one, and rule it out if it is not.
	int64_t limit = min + 10;
	int ruledOutNear = 0; // a position ruled out is within the slack
	for (;;) {
		int bx = -1, by = -1;
		int64_t bestDist = 0;
		for (int py = sy; py < ny; py++) {
			const double *row = a + (size_t)py * astride;
			int64_t dy = py - qy;
			for (int px = py == sy ? sx : 0; px < nx; px++) {
				if (row[px] - bound > limit)
					continue;
				int64_t dx = px - qx, dist = dx * dx + dy * dy;
				if (by < 0 || dist < bestDist)
					bx = px, by = py, bestDist = dist;
			}
		}
		work += (int64_t)nx * ny;
		if (by < 0)
			goto done; // the bound did not hold
		int64_t v = ssd(AT(bx, by), stride, tpl, tw, th, rows, limit + slack, &work);
		if (v <= limit) {
			out->x = bx, out->y = by, out->ssd = v;
			out->tied = ruledOutNear || approxTied(a, astride, nx, ny, bx, by, bound, limit + slack);
			status = JETQA_FOUND;
			goto done;
		}
		ruledOutNear |= v <= limit + slack;
		a[(size_t)by * astride + bx] = INFINITY;
		if (work > budget)
			goto done;
	}
#undef AT
done:
	out->work = work;
	free(col);
	free(rows);
	return status;
}
