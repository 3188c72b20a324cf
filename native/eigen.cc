#include "eigen.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "errors.h"

#ifdef KVTC_HAVE_OPENBLAS
#include <lapacke.h>
#endif

namespace kvtc {
namespace {

// Householder reduction to tridiagonal form followed by the implicit QL algorithm (the classic
// EISPACK tred2/tql2 pair). Eigenvectors are kept transposed (W[j][r] = V[r][j]) so that the QL
// rotations, the O(n^3) part, sweep contiguous memory.
[[maybe_unused]] void tred2_tql2(int n, std::vector<double>& a, std::vector<double>& d, std::vector<double>& W) {
  W.assign(size_t(n) * n, 0.0);
  auto V = [&](int r, int c) -> double& { return W[size_t(c) * n + r]; };
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++) V(r, c) = a[size_t(r) * n + c];
  d.assign(n, 0.0);
  std::vector<double> e(n, 0.0);
  for (int j = 0; j < n; j++) d[j] = V(n - 1, j);

  for (int i = n - 1; i > 0; i--) {
    double scale = 0.0, h = 0.0;
    for (int k = 0; k < i; k++) scale += std::fabs(d[k]);
    if (scale == 0.0) {
      e[i] = d[i - 1];
      for (int j = 0; j < i; j++) {
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
        V(j, i) = 0.0;
      }
    } else {
      for (int k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      double f = d[i - 1];
      double g = std::sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int j = 0; j < i; j++) e[j] = 0.0;
      for (int j = 0; j < i; j++) {
        f = d[j];
        V(j, i) = f;
        g = e[j] + V(j, j) * f;
        double* colj = &V(0, j);  // column j of V is contiguous in W
        for (int k = j + 1; k <= i - 1; k++) {
          g += colj[k] * d[k];
          e[k] += colj[k] * f;
        }
        e[j] = g;
      }
      f = 0.0;
      for (int j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const double hh = f / (h + h);
      for (int j = 0; j < i; j++) e[j] -= hh * d[j];
      for (int j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        double* colj = &V(0, j);
        for (int k = j; k <= i - 1; k++) colj[k] -= (f * e[k] + g * d[k]);
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
      }
    }
    d[i] = h;
  }
  for (int i = 0; i < n - 1; i++) {
    V(n - 1, i) = V(i, i);
    V(i, i) = 1.0;
    const double h = d[i + 1];
    double* coli1 = &V(0, i + 1);
    if (h != 0.0) {
      for (int k = 0; k <= i; k++) d[k] = coli1[k] / h;
      for (int j = 0; j <= i; j++) {
        double* colj = &V(0, j);
        double g = 0.0;
        for (int k = 0; k <= i; k++) g += coli1[k] * colj[k];
        for (int k = 0; k <= i; k++) colj[k] -= g * d[k];
      }
    }
    for (int k = 0; k <= i; k++) coli1[k] = 0.0;
  }
  for (int j = 0; j < n; j++) {
    d[j] = V(n - 1, j);
    V(n - 1, j) = 0.0;
  }
  V(n - 1, n - 1) = 1.0;
  e[0] = 0.0;

  // tql2
  for (int i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0.0;
  double f = 0.0, tst1 = 0.0;
  const double eps = std::ldexp(1.0, -52);
  for (int l = 0; l < n; l++) {
    tst1 = std::max(tst1, std::fabs(d[l]) + std::fabs(e[l]));
    int m = l;
    while (m < n) {
      if (std::fabs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m == n) m = n - 1;
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
          double* wi = &W[size_t(i) * n];
          double* wi1 = &W[size_t(i + 1) * n];
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

}  // namespace

void sym_eig_desc(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs) {
  for (double v : a)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "covariance holds NaN or Inf; calibration samples must be finite");
  std::vector<double> d, W;
#ifdef KVTC_HAVE_OPENBLAS
  d.assign(n, 0.0);
  W = a;  // LAPACKE row-major: on exit row-major matrix whose columns are eigenvectors
  if (LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, W.data(), n, d.data()) != 0)
    fail("E_CALIBRATION", "LAPACKE_dsyevd failed");
  // Column-major storage of a symmetric input == row-major; column j of the result is W[j*n...].
#else
  if (n == 1) {
    d = {a[0]};
    W = {1.0};
  } else {
    tred2_tql2(n, a, d, W);
  }
#endif
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return d[x] > d[y]; });
  evals.resize(n);
  evecs.resize(size_t(n) * n);
  for (int i = 0; i < n; i++) {
    const int src = order[i];
    evals[i] = d[src];
    const double* v = &W[size_t(src) * n];
    int arg = 0;
    for (int k = 1; k < n; k++)
      if (std::fabs(v[k]) > std::fabs(v[arg])) arg = k;
    const double sgn = v[arg] < 0 ? -1.0 : 1.0;
    for (int k = 0; k < n; k++) evecs[size_t(i) * n + k] = sgn * v[k];
  }
}

}  // namespace kvtc
