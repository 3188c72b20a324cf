// The symmetric eigensolver behind calibration (PCA of each stream group's covariance).
#pragma once
#include <vector>

namespace kvtc {

// Eigen-decomposition of a symmetric n x n matrix (row-major, full storage; destroyed).
// evals: n eigenvalues in descending order. evecs: n x n row-major, row i = unit eigenvector i,
// sign fixed so that its largest-magnitude entry is positive (so calibration is deterministic).
// Throws E_CALIBRATION on NaN/Inf input or if the iteration fails to converge.
// path: nullptr picks the best vector path of this CPU (sym_eig_path()); "avx512", "avx2" or
// "generic" forces one (tests compare them; a path the CPU lacks must not be forced).
// With OpenBLAS in the build and path == nullptr, LAPACKE's dsyevd does the work instead.
// The solver keeps its scratch (about 6 n^2 doubles) per thread for the next call; a thread that
// is done calls sym_eig_release_scratch() (a thread's exit frees it too).
void sym_eig_desc(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs,
                  const char* path = nullptr);

// Frees the calling thread's scratch of sym_eig_desc.
void sym_eig_release_scratch();

// The vector path sym_eig_desc picks on this CPU: "avx512", "avx2" or "generic".
const char* sym_eig_path();
// Whether this CPU can run the named path ("generic" always).
bool sym_eig_path_supported(const char* path);

// The classic EISPACK tred2/tql2 solver the fast one replaced, same contract; for tests and the
// calibration benchmark to compare against.
void sym_eig_desc_reference(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs);

}  // namespace kvtc
