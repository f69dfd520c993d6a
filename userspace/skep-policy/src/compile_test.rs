//! Table-driven tests of the compiler against the upstream `NetworkPolicy` scenarios.
