#include "tridiag_eig.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "errors.h"
#include "implicit_ql.h"
#include "out_pages.h"

// Cuppen's divide and conquer with Gu and Eisenstat's eigenvector formula. T is torn in two at its
// middle off-diagonal entry b: T = diag(T1, T2) + |b| v v^T with v = (e_last of T1, sign(b) e_first
// of T2) once |b| is taken off the two diagonal entries it couples. The halves are solved the same
// way (small blocks by implicit QL), and their eigenpairs merged: in the basis of the halves'
// eigenvectors the merged matrix is D + rho z z^T (D the halves' eigenvalues, z the eigenvectors'
// entries at the tear), whose eigenvalues are the roots of the secular equation
//   f(x) = 1 + rho sum_j z_j^2 / (d_j - x)
// one between each pair of poles. Its eigenvectors are (z_j / (d_j - x))_j; those are orthogonal
// to working precision only if z is recomputed from the computed roots (Gu–Eisenstat), and each
// root is carried as an offset from its nearer pole so that every difference d_j - x is exact to
// relative precision. Merging is then one matrix product per half (the merged vectors are the
// halves' vectors times the secular vectors), so the O(n^3) work runs on the GEMM kernel instead
// of as plane rotations. Entries of z below the noise, and poles closer than the noise, deflate:
// their eigenpairs pass through unchanged (after one rotation for a close pair). Every step runs in
// a fixed order: the same input gives the same bits.

namespace kvtc {
namespace {

constexpr int kLeaf = 32;  // blocks this small are solved by implicit QL
constexpr double kEps = 0x1p-53;

// Implicit QL with Wilkinson shifts (tql2) on an nb x nb block; Z (row stride ld) becomes the
// eigenvectors as rows, d the eigenvalues, both sorted ascending. e[nb-1] must be 0.
inline __attribute__((always_inline)) void leaf_ql(int nb, double* d, double* e, double* Z, size_t ld) {
  for (int i = 0; i < nb; i++) {
    std::fill(Z + i * ld, Z + i * ld + nb, 0.0);
    Z[i * ld + i] = 1.0;
  }
  implicit_ql(nb, d, e, Z, ld);
  // Selection sort (stable enough for a fixed order; nb is small).
  for (int i = 0; i < nb - 1; i++) {
    int k = i;
    for (int j = i + 1; j < nb; j++)
      if (d[j] < d[k]) k = j;
    if (k != i) {
      std::swap(d[i], d[k]);
      std::swap_ranges(Z + i * ld, Z + i * ld + nb, Z + k * ld);
    }
  }
}

// Sums of z_j^2 / (delta_j - t) and of its derivative over j in [j0, j1), with 8 partial sums
// combined in a fixed order (vectorizes without reassociation; same bits for the same input).
inline __attribute__((always_inline)) void secular_sums(const double* delta, const double* z2, int j0, int j1, double t, double& s, double& ds) {
  double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = j0;
  for (; j + 8 <= j1; j += 8)
    for (int u = 0; u < 8; u++) {
      const double r = 1.0 / (delta[j + u] - t);
      const double q = z2[j + u] * r;
      a[u] += q;
      b[u] += q * r;
    }
  for (int u = 0; j < j1; j++, u++) {
    const double r = 1.0 / (delta[j] - t);
    const double q = z2[j] * r;
    a[u] += q;
    b[u] += q * r;
  }
  s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
  ds = ((b[0] + b[4]) + (b[1] + b[5])) + ((b[2] + b[6]) + (b[3] + b[7]));
}

// Root i of the secular equation (poles dl[0..k) strictly ascending, weights z2 = z^2 > 0,
// rho > 0): the root is dl[org] + tau, org the nearer pole. delta: scratch of k, left holding
// dl[j] - dl[org].
inline __attribute__((always_inline)) void secular_root(int k, int i, const double* dl, const double* z2, double rho, double zz, double* delta, int& org,
                  double& tau) {
  double lo, hi;
  if (i == k - 1) {
    org = i;
    lo = 0;
    hi = rho * zz;
  } else {
    const double mid = 0.5 * (dl[i + 1] - dl[i]);
    for (int j = 0; j < k; j++) delta[j] = dl[j] - dl[i];
    double s, ds;
    secular_sums(delta, z2, 0, k, mid, s, ds);
    if (1.0 + rho * s >= 0) {
      org = i;
      lo = 0;
      hi = mid;
    } else {
      org = i + 1;
      lo = -mid;
      hi = 0;
    }
  }
  if (org != i || i == k - 1)
    for (int j = 0; j < k; j++) delta[j] = dl[j] - dl[org];
  double t = 0.5 * (lo + hi);
  for (int iter = 0;; iter++) {
    if (iter > 400) fail("E_CALIBRATION", "eigensolver did not converge (secular equation)");
    double psi, dpsi, phi = 0, dphi = 0;
    secular_sums(delta, z2, 0, i + 1, t, psi, dpsi);
    if (i + 1 < k) secular_sums(delta, z2, i + 1, k, t, phi, dphi);
    const double f = 1.0 + rho * (psi + phi);
    if (f == 0) break;
    if (f < 0)
      lo = t;
    else
      hi = t;
    // The rounding error of evaluating f bounds how close to zero it can be brought.
    if (std::fabs(f) <= 16 * kEps * k * (1.0 + rho * (std::fabs(psi) + std::fabs(phi)))) break;
    if (hi - lo <= 4 * kEps * std::max(std::fabs(lo), std::fabs(hi))) break;
    // Model psi and phi each by a constant plus one pole term matching value and slope at t, and
    // step to the model's root (quadratic); bisect when that root leaves the bracket.
    const double Di = delta[i] - t;
    const double b1 = dpsi * Di * Di;
    const double B1 = rho * b1;
    double y;
    bool ok = false;
    if (i + 1 < k) {
      const double Di1 = delta[i + 1] - t;
      const double b2 = dphi * Di1 * Di1;
      const double B2 = rho * b2;
      const double C = 1.0 + rho * ((psi - b1 / Di) + (phi - b2 / Di1));
      // C (Di - y)(Di1 - y) + B1 (Di1 - y) + B2 (Di - y) = 0, constant term Di Di1 f.
      const double qa = C, qb = -(C * (Di + Di1) + B1 + B2), qc = Di * Di1 * f;
      const double disc = std::max(0.0, qb * qb - 4 * qa * qc);
      const double q = -0.5 * (qb + std::copysign(std::sqrt(disc), qb));
      double best = 0;
      if (q != 0) {
        const double y1 = qc / q;
        if (t + y1 > lo && t + y1 < hi) {
          best = y1;
          ok = true;
        }
      }
      if (qa != 0) {
        const double y2 = q / qa;
        if (t + y2 > lo && t + y2 < hi && (!ok || std::fabs(y2) < std::fabs(best))) {
          best = y2;
          ok = true;
        }
      }
      y = best;
    } else {
      const double C = 1.0 + rho * (psi - b1 / Di);
      y = C != 0 ? Di + B1 / C : 0;
      ok = C != 0 && t + y > lo && t + y < hi;
    }
    const double tn = ok ? t + y : 0.5 * (lo + hi);
    if (tn == t) break;
    t = tn;
  }
  tau = t;
}

struct Workspace {
  std::vector<double> Q, Qc, U, W, ds, zs, dl, z2, delta, tau, lam, zhat, pd, pz;
  std::vector<int> idx, type, nondefl, perm, org, order;
  std::vector<char> defl;
};

// Merges the solved halves [0, n1) and [n1, n) of the block at Z (row stride ld): rows are the
// halves' eigenvectors (zero outside their half), d their eigenvalues (ascending per half); beta
// the torn off-diagonal entry. Leaves the block's eigenpairs, ascending.
inline __attribute__((always_inline)) void merge(int n, int n1, double beta, double* d, double* Z, size_t ld, GemmF64Fn gemm, Workspace& w) {
  const double rho = 2 * std::fabs(beta);
  const double sgn = beta >= 0 ? 1.0 : -1.0;
  const double r2 = std::sqrt(0.5);
  // Sorted order of the poles (stable merge of the two ascending halves).
  w.idx.resize(n);
  w.Q.resize(size_t(n) * n);
  w.ds.resize(n);
  w.zs.resize(n);
  w.type.resize(n);
  w.defl.assign(n, 0);
  {
    std::vector<int>& src = w.order;
    src.resize(n);
    std::iota(src.begin(), src.end(), 0);
    std::merge(src.begin(), src.begin() + n1, src.begin() + n1, src.end(), w.idx.begin(),
               [&](int a, int b) { return d[a] < d[b]; });
  }
  double dmax = 0;
  for (int s = 0; s < n; s++) {
    const int j = w.idx[s];
    std::memcpy(&w.Q[size_t(s) * n], Z + size_t(j) * ld, sizeof(double) * n);
    w.ds[s] = d[j];
    w.zs[s] = j < n1 ? r2 * Z[size_t(j) * ld + n1 - 1] : sgn * r2 * Z[size_t(j) * ld + n1];
    w.type[s] = j < n1 ? 1 : 2;
    dmax = std::max(dmax, std::fabs(d[j]));
  }
  const double tol = 8 * (2 * kEps) * std::max(dmax, rho);
  // Deflation, in ascending order of the poles.
  w.nondefl.clear();
  int prev = -1;
  for (int s = 0; s < n; s++) {
    if (rho * std::fabs(w.zs[s]) <= tol) {
      w.defl[s] = 1;
      continue;
    }
    if (prev < 0) {
      prev = s;
      continue;
    }
    const double a = w.zs[prev], b = w.zs[s];
    const double t = std::hypot(a, b);
    const double c = b / t, sn = a / t;
    if (std::fabs((w.ds[s] - w.ds[prev]) * c * sn) <= tol) {
      // Rotate the pair so that z has no weight on the first: that one's coupling to the rest
      // is below the noise and it deflates.
      double* qp = &w.Q[size_t(prev) * n];
      double* qs = &w.Q[size_t(s) * n];
      for (int x = 0; x < n; x++) {
        const double u = qp[x], v = qs[x];
        qp[x] = c * u - sn * v;
        qs[x] = sn * u + c * v;
      }
      const double dp = w.ds[prev], dv = w.ds[s];
      w.ds[prev] = c * c * dp + sn * sn * dv;
      w.ds[s] = sn * sn * dp + c * c * dv;
      w.zs[s] = t;
      w.zs[prev] = 0;
      w.defl[prev] = 1;
      w.type[s] |= w.type[prev];
      prev = s;
    } else {
      w.nondefl.push_back(prev);
      prev = s;
    }
  }
  if (prev >= 0) w.nondefl.push_back(prev);
  const int k = int(w.nondefl.size());

  // The secular problem of the k remaining poles, its vectors as rows of U (k x k) whose columns
  // follow the halves' vectors grouped by support: first half only, both, second half only.
  w.W.resize(size_t(std::max(k, 1)) * n);
  if (k > 0) {
    w.dl.resize(k);
    w.z2.resize(k);
    w.delta.resize(k);
    w.tau.resize(k);
    w.org.resize(k);
    w.zhat.resize(k);
    double zz = 0;
    for (int j = 0; j < k; j++) {
      w.dl[j] = w.ds[w.nondefl[j]];
      const double z = w.zs[w.nondefl[j]];
      w.z2[j] = z * z;
      zz += w.z2[j];
    }
    for (int i = 0; i < k; i++) secular_root(k, i, w.dl.data(), w.z2.data(), rho, zz, w.delta.data(), w.org[i], w.tau[i]);
    // diff(j, i) = dl[j] - lambda_i, exact to relative precision.
    auto diff = [&](int j, int i) { return (w.dl[j] - w.dl[w.org[i]]) - w.tau[i]; };
    // Gu–Eisenstat: the z for which the computed roots are exact,
    //   zhat_j^2 = (lambda_j - d_j) / rho * prod_{i != j} (lambda_i - d_j) / (d_i - d_j),
    // accumulated over i for all j at once (the inner loop runs over j and vectorizes).
    double* zh = w.zhat.data();
    const double* dl = w.dl.data();
    for (int j = 0; j < k; j++) zh[j] = -diff(j, j) / rho;
    for (int i = 0; i < k; i++) {
      const double di = dl[i], base = dl[w.org[i]], ti = w.tau[i];
      for (int j = 0; j < i; j++) zh[j] *= ((base - dl[j]) + ti) / (di - dl[j]);
      for (int j = i + 1; j < k; j++) zh[j] *= ((base - dl[j]) + ti) / (di - dl[j]);
    }
    for (int j = 0; j < k; j++) zh[j] = std::copysign(std::sqrt(std::max(zh[j], 0.0)), w.zs[w.nondefl[j]]);
    w.perm.clear();
    for (int want : {1, 3, 2})
      for (int j = 0; j < k; j++)
        if (w.type[w.nondefl[j]] == want) w.perm.push_back(j);
    int k1 = 0, k2 = 0;
    for (int j = 0; j < k; j++) {
      const int ty = w.type[w.nondefl[j]];
      k1 += ty == 1;
      k2 += ty == 2;
    }
    const int k3 = k - k1 - k2;
    w.U.resize(size_t(k) * k);
    w.Qc.resize(size_t(k) * n);
    w.pd.resize(k);
    w.pz.resize(k);
    for (int c = 0; c < k; c++) {
      const int j = w.perm[c];
      std::memcpy(&w.Qc[size_t(c) * n], &w.Q[size_t(w.nondefl[j]) * n], sizeof(double) * n);
      w.pd[c] = dl[j];
      w.pz[c] = zh[j];
    }
    // Row i of U: the secular vector of root i, (zhat_j / (d_j - lambda_i))_j normalized, in the
    // columns' order.
    const double* pd = w.pd.data();
    const double* pz = w.pz.data();
    for (int i = 0; i < k; i++) {
      double* u = &w.U[size_t(i) * k];
      const double base = dl[w.org[i]], ti = w.tau[i];
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int c = 0;
      for (; c + 8 <= k; c += 8)
        for (int q = 0; q < 8; q++) {
          const double x = pz[c + q] / ((pd[c + q] - base) - ti);
          u[c + q] = x;
          acc[q] += x * x;
        }
      for (int q = 0; c < k; c++, q++) {
        const double x = pz[c] / ((pd[c] - base) - ti);
        u[c] = x;
        acc[q] += x * x;
      }
      const double nrm = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      const double inv = 1.0 / std::sqrt(nrm);
      for (c = 0; c < k; c++) u[c] *= inv;
    }
    // The merged vectors: first half's entries from the vectors that have any there, and so on.
    const int ka = k1 + k3, kb = k3 + k2;
    if (ka > 0)
      gemm(k, n1, ka, w.U.data(), k, w.Qc.data(), n, w.W.data(), n, false);
    else
      for (int i = 0; i < k; i++) std::fill(&w.W[size_t(i) * n], &w.W[size_t(i) * n] + n1, 0.0);
    if (kb > 0)
      gemm(k, n - n1, kb, w.U.data() + k1, k, w.Qc.data() + size_t(k1) * n + n1, n, w.W.data() + n1, n, false);
    else
      for (int i = 0; i < k; i++) std::fill(&w.W[size_t(i) * n] + n1, &w.W[size_t(i) * n] + n, 0.0);
    w.lam.resize(k);
    for (int i = 0; i < k; i++) w.lam[i] = w.dl[w.org[i]] + w.tau[i];
  }
  // All eigenpairs back into the block, ascending: the secular ones and the deflated ones.
  struct Src {
    double v;
    const double* row;
  };
  std::vector<Src> all;
  all.reserve(n);
  for (int i = 0; i < k; i++) all.push_back({w.lam[i], &w.W[size_t(i) * n]});
  for (int s = 0; s < n; s++)
    if (w.defl[s]) all.push_back({w.ds[s], &w.Q[size_t(s) * n]});
  std::stable_sort(all.begin(), all.end(), [](const Src& a, const Src& b) { return a.v < b.v; });
  for (int i = 0; i < n; i++) {
    d[i] = all[i].v;
    std::memcpy(Z + size_t(i) * ld, all[i].row, sizeof(double) * n);
  }
}

// This thread's buffers, kept between calls (tridiag_eig_release frees them).
Workspace& thread_workspace() {
  static thread_local Workspace w;
  return w;
}

// The recursion's blocks in the order it would solve them: leaves and merges, children first.
struct Task {
  int lo, n, n1;  // n1 = 0: a leaf
  double beta;    // the torn entry (merges)
};

void plan_tasks(int lo, int n, const double* e, std::vector<Task>& out) {
  if (n <= kLeaf) {
    out.push_back({lo, n, 0, 0.0});
    return;
  }
  const int n1 = n / 2;
  plan_tasks(lo, n1, e, out);
  plan_tasks(lo + n1, n - n1, e, out);
  out.push_back({lo, n, n1, e[lo + n1 - 1]});
}

// Runs the tasks; instantiated once per vector path (the loops above are inlined into it and
// compiled for that path's instruction set).
inline __attribute__((always_inline)) void run_tasks(const std::vector<Task>& tasks, double* d, double* e, double* Z,
                                                     size_t ld, GemmF64Fn gemm) {
  Workspace& w = thread_workspace();
  // The top merge's n x n buffers, reserved at once and on huge pages where the system allows
  // (fresh memory otherwise costs a fault per 4 KiB page, ~5% of the solve at n = 1024); kept for
  // this thread's next call.
  const size_t n = size_t(tasks.back().n);
  for (std::vector<double>* v : {&w.Q, &w.Qc, &w.W, &w.U})
    if (v->capacity() < n * n) {
      std::vector<double>().swap(*v);
      v->reserve(n * n);
      prepare_output_pages(v->data(), n * n * sizeof(double));
    }
  std::vector<double> le(kLeaf);
  for (const Task& t : tasks) {
    double* dt = d + t.lo;
    double* Zt = Z + size_t(t.lo) * ld + t.lo;
    if (t.n1 == 0) {
      std::copy(e + t.lo, e + t.lo + t.n - 1, le.begin());
      le[t.n - 1] = 0.0;
      leaf_ql(t.n, dt, le.data(), Zt, ld);
    } else {
      merge(t.n, t.n1, t.beta, dt, Zt, ld, gemm, w);
    }
  }
}

void run_generic(const std::vector<Task>& t, double* d, double* e, double* Z, size_t ld, GemmF64Fn gemm) {
  run_tasks(t, d, e, Z, ld, gemm);
}
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void run_avx2(const std::vector<Task>& t, double* d, double* e, double* Z,
                                                  size_t ld, GemmF64Fn gemm) {
  run_tasks(t, d, e, Z, ld, gemm);
}
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void run_avx512(const std::vector<Task>& t, double* d,
                                                                            double* e, double* Z, size_t ld,
                                                                            GemmF64Fn gemm) {
  run_tasks(t, d, e, Z, ld, gemm);
}
#endif

}  // namespace

void tridiag_eig(int n, double* d, double* e, double* Z, size_t ldz, GemmF64Fn gemm, const char* path) {
  if (n <= 0) return;
  for (int i = 0; i < n; i++) std::fill(Z + i * ldz, Z + i * ldz + n, 0.0);
  std::vector<Task> tasks;
  plan_tasks(0, n, e, tasks);
  // Tear at every merge point first (the points are distinct, so the order does not matter).
  for (const Task& t : tasks)
    if (t.n1) {
      d[t.lo + t.n1 - 1] -= std::fabs(t.beta);
      d[t.lo + t.n1] -= std::fabs(t.beta);
    }
#if defined(__x86_64__)
  if (path && std::strcmp(path, "avx512") == 0) return run_avx512(tasks, d, e, Z, ldz, gemm);
  if (path && std::strcmp(path, "avx2") == 0) return run_avx2(tasks, d, e, Z, ldz, gemm);
#endif
  run_generic(tasks, d, e, Z, ldz, gemm);
}

void tridiag_eig_release() { thread_workspace() = Workspace(); }

}  // namespace kvtc
