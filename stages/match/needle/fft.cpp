// Cross-correlation through OpenCV's DFT, in float64, for fft.go.

#include <opencv2/core.hpp>

#include "fft.h"

// padded is the w x h pixels, as float64, at the top left of zeros of
// pw x ph.
static cv::Mat padded(const uint8_t *pixels, int stride, int w, int h, int pw, int ph) {
	cv::Mat out = cv::Mat::zeros(ph, pw, CV_64F);
	cv::Mat in(h, w, CV_8U, const_cast<uint8_t *>(pixels), stride);
	cv::Mat dst = out(cv::Rect(0, 0, w, h));
	in.convertTo(dst, CV_64F);
	return out;
}

// jetqa_spectrum is the DFT (OpenCV's packed CCS layout) of the w x h
// pixels padded with zeros to pw x ph.
int jetqa_spectrum(const uint8_t *pixels, int stride, int w, int h, int pw, int ph, void *spectrum) {
	try {
		cv::Mat m = padded(pixels, stride, w, h, pw, ph);
		cv::dft(m, m, 0, h);
		*static_cast<cv::Mat *>(spectrum) = m;
		return 0;
	} catch (...) {
		return -1;
	}
}

// jetqa_correlate is the circular cross-correlation of the image and the
// template whose spectra are given: corr(x,y) = Σ image(x+i, y+j)·tpl(i, j).
// Only its first rows are computed.
int jetqa_correlate(const void *spectrum, const void *tplSpectrum, int rows, void *corr) {
	try {
		cv::Mat product;
		cv::mulSpectrums(*static_cast<const cv::Mat *>(spectrum), *static_cast<const cv::Mat *>(tplSpectrum), product, 0, true);
		cv::dft(product, *static_cast<cv::Mat *>(corr), cv::DFT_INVERSE | cv::DFT_SCALE | cv::DFT_REAL_OUTPUT, rows);
		return 0;
	} catch (...) {
		return -1;
	}
}
