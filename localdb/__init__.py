"""A private MariaDB server on 127.0.0.1 for development, tests and benchmarks."""
