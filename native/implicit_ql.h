// The implicit QL sweep with Wilkinson shifts (EISPACK tql2) on a symmetric tridiagonal matrix:
// the leaves of the divide-and-conquer solver (tridiag_eig.cc) and the reference solver
// (eigen.cc) run this one copy. Inline on purpose: each caller compiles it for its own vector
// path, so every path keeps its own bits.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "errors.h"

namespace kvtc {

// d[0..n): diagonal, e[0..n): off-diagonal with e[n-1] = 0 (destroyed). On return d holds the
// eigenvalues, unsorted; every rotation is applied to rows i, i+1 of Z (row stride ld, n columns),
// so Z's rows become the eigenvectors of the matrix whose eigenvectors they held. Throws
// E_CALIBRATION after 200 iterations on one eigenvalue (NaN/Inf input).
inline __attribute__((always_inline)) void implicit_ql(int n, double* d, double* e, double* Z, size_t ld) {
  double f = 0.0, tst1 = 0.0;
  const double eps = 0x1p-52;
  for (int l = 0; l < n; l++) {
    tst1 = std::max(tst1, std::fabs(d[l]) + std::fabs(e[l]));
    int m = l;
    while (m < n - 1 && std::fabs(e[m]) > eps * tst1) m++;
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 200) fail("E_CALIBRATION", "eigensolver did not converge (covariance has NaN/Inf?)");
        double g = d[l];
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = std::hypot(p, 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1.0, c2 = 1.0, c3 = 1.0;
        const double el1 = e[l + 1];
        double s = 0.0, s2 = 0.0;
        for (int i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = std::hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double* wi = Z + size_t(i) * ld;
          double* wi1 = wi + ld;
          for (int k = 0; k < n; k++) {
            const double hk = wi1[k];
            wi1[k] = s * wi[k] + c * hk;
            wi[k] = c * wi[k] - s * hk;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (std::fabs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0.0;
  }
}

}  // namespace kvtc
