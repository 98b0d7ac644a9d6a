// tinycv's own choice of position, for pick.go: where several positions
// are about as good, float32 rounding and the order of std::sort decide
// which one os-autoinst takes, so this takes it the same way.

#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "pick.h"

// jetqa_tinycv_pick searches the template (tw x th, continuous) in the
// window (ww x wh, rows stride apart) as tinycv's search_TEMPLATE does:
// OpenCV's TM_SQDIFF in float32; JETQA_ZERO_AT_AREA when the value at the
// area's own position (ox,oy) is exactly 0; else the positions whose value
// is within 10 of the smallest value seen from the first one at most 10
// above the area's own on, a smaller value starting them afresh, sorted
// with std::sort by their distance to (qx,qy) (window-relative positions
// against the area's absolute one, as tinycv measures), the first taken.
int jetqa_tinycv_pick(const uint8_t *window, int stride, int ww, int wh, const uint8_t *tpl, int tw, int th,
                      int ox, int oy, int qx, int qy, int *x, int *y) {
	try {
		cv::Mat scene(wh, ww, CV_8U, const_cast<uint8_t *>(window), stride);
		cv::Mat object(th, tw, CV_8U, const_cast<uint8_t *>(tpl));
		cv::Mat result = cv::Mat::zeros(wh - th + 1, ww - tw + 1, CV_32FC1);
		cv::matchTemplate(scene, object, result, cv::TM_SQDIFF);
		double atArea = result.at<float>(cv::Point(ox, oy));
		if (atArea == 0) {
			*x = ox, *y = oy;
			return JETQA_ZERO_AT_AREA;
		}
		float limit = (float)atArea + 10;
		std::vector<cv::Point> near;
		for (int py = 0; py < result.rows; py++) {
			const float *row = result.ptr<float>(py);
			for (int px = 0; px < result.cols; px++) {
				if (row[px] > limit)
					continue;
				if (row[px] + 10 < limit) {
					limit = row[px] + 10;
					near.clear();
				}
				near.push_back(cv::Point(px, py));
			}
		}
		if (near.empty())
			return JETQA_NO_PICK;
		const cv::Point area(qx, qy);
		std::sort(near.begin(), near.end(), [&area](const cv::Point &a, const cv::Point &b) {
			return cv::norm(area - a) < cv::norm(area - b);
		});
		*x = near[0].x, *y = near[0].y;
		return JETQA_PICKED;
	} catch (...) {
		return JETQA_PICK_FAILED;
	}
}
