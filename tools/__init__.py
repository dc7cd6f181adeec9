"""Developer tools: sample fetching, the mean-face builder and benchmarks (importable by the tests)."""
