// The symmetric eigensolver behind calibration (PCA of each stream group's covariance).
#pragma once
#include <vector>

namespace kvtc {

// Eigen-decomposition of a symmetric n x n matrix (row-major, full storage; destroyed).
// evals: n eigenvalues in descending order. evecs: n x n row-major, row i = unit eigenvector i,
// sign fixed so that its largest-magnitude entry is positive (so calibration is deterministic).
// Throws E_CALIBRATION if the iteration fails to converge.
void sym_eig_desc(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs);

}  // namespace kvtc
