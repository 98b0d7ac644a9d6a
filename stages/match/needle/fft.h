#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// OpenCV matrices are passed as the cv::Mat behind a gocv.Mat.
int jetqa_spectrum(const uint8_t *pixels, int stride, int w, int h, int pw, int ph, void *spectrum);
int jetqa_correlate(const void *spectrum, const void *tplSpectrum, int rows, void *corr);

#ifdef __cplusplus
}
#endif
