#if canImport(Glibc)
import Glibc
#endif

@inline(__always) func Foundation_log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func Foundation_exp(_ x: Double) -> Double { Glibc.exp(x) }
