//! INT8 quantization, SIMD dot-product kernels and top-k search (issue: INT8 vector search).
