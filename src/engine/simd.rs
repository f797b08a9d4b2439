//! Which SIMD code path the `f32` kernels ([`super::kernel`], [`super::vmath`]) take: chosen once
//! at run time from the CPU and the environment, queryable, and forcible for tests.
//!
//! | path | needs | GEMM tile | vector math |
//! |---|---|---|---|
//! | [`SimdPath::Avx512`] | AVX-512F | 16-lane, masked remainders | 16 lanes |
//! | [`SimdPath::Avx2`] | AVX2 + FMA | 8-lane, masked remainders | 8 lanes |
//! | [`SimdPath::Portable`] | nothing | plain Rust with `f32::mul_add` | scalar `mul_add` |
//!
//! **All three give bit-identical results.** Every output element of a product is
//! `fma(a_{k-1}, b_{k-1}, ... fma(a_1, b_1, fma(a_0, b_0, 0)))` summed in the same order of `p`,
//! followed by the same epilogue operations; `exp` and `tanh` are the same sequence of IEEE-754
//! operations (fused multiply-add, multiply, add, divide, bit operations), each exactly rounded,
//! so the lane width changes nothing. `f32::mul_add` is an exact fused multiply-add on every
//! target (a single instruction where the CPU has FMA, e.g. x86-64 with FMA or aarch64; a
//! correct but slow software routine on x86-64 CPUs older than 2013 without it).
//!
//! The environment variable `HEPFLOW_SIMD=avx512|avx2|portable` selects a path (a path the CPU
//! lacks falls back to the best one it has below it); `HEPFLOW_NO_AVX512=1` is an alias for
//! `portable`, kept from earlier versions. Without either, the best path the CPU supports runs.

use std::sync::atomic::{AtomicU8, Ordering};

/// One of the SIMD code paths of the `f32` kernels (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdPath {
    /// 16-lane AVX-512F kernels.
    Avx512,
    /// 8-lane AVX2 + FMA kernels.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

/// Errors of [`force`] and [`requested_from_env`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimdError {
    /// `HEPFLOW_SIMD` holds something other than `avx512`, `avx2` or `portable`.
    #[error("HEPFLOW_SIMD={0:?} is not one of avx512, avx2, portable")]
    UnknownPath(String),
    /// The CPU lacks the instructions of the requested path.
    #[error("this CPU cannot run the {0} SIMD path")]
    Unsupported(&'static str),
}

impl SimdPath {
    /// Every path, fastest first.
    pub const ALL: [SimdPath; 3] = [SimdPath::Avx512, SimdPath::Avx2, SimdPath::Portable];

    /// The name `HEPFLOW_SIMD` uses.
    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Avx512 => "avx512",
            SimdPath::Avx2 => "avx2",
            SimdPath::Portable => "portable",
        }
    }

    /// Parses a name as `HEPFLOW_SIMD` takes it (case-insensitive).
    pub fn parse(name: &str) -> Result<Self, SimdError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| SimdError::UnknownPath(name.to_string()))
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            SimdPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    fn code(self) -> u8 {
        match self {
            SimdPath::Avx512 => 1,
            SimdPath::Avx2 => 2,
            SimdPath::Portable => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }

    /// This path if the CPU supports it, else the best supported one below it.
    fn or_below(self) -> Self {
        Self::ALL
            .into_iter()
            .skip_while(|p| *p != self)
            .find(|p| p.supported())
            .unwrap_or(SimdPath::Portable)
    }
}

impl std::fmt::Display for SimdPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The paths this CPU supports, fastest first.
pub fn supported_paths() -> Vec<SimdPath> {
    SimdPath::ALL
        .into_iter()
        .filter(|p| p.supported())
        .collect()
}

/// The path the environment asks for: `HEPFLOW_SIMD`, else `portable` when `HEPFLOW_NO_AVX512`
/// is set, else `None` (the best the CPU has). An unknown `HEPFLOW_SIMD` value is an error here;
/// [`active`] ignores it (the CLI can call this to report it).
pub fn requested_from_env() -> Result<Option<SimdPath>, SimdError> {
    if let Some(v) = std::env::var_os("HEPFLOW_SIMD") {
        return SimdPath::parse(&v.to_string_lossy()).map(Some);
    }
    Ok(std::env::var_os("HEPFLOW_NO_AVX512").map(|_| SimdPath::Portable))
}

/// 0 = not chosen yet, else [`SimdPath::code`].
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The path the kernels take: decided on the first call (see the module documentation), or set
/// by [`force`].
#[inline]
pub fn active() -> SimdPath {
    match SimdPath::from_code(ACTIVE.load(Ordering::Relaxed)) {
        Some(p) => p,
        None => {
            let p = requested_from_env()
                .ok()
                .flatten()
                .unwrap_or(SimdPath::Avx512)
                .or_below();
            // Another thread may have decided (or forced) meanwhile: keep its choice.
            match ACTIVE.compare_exchange(0, p.code(), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => p,
                Err(code) => SimdPath::from_code(code).unwrap_or(p),
            }
        }
    }
}

/// Makes every later kernel call in this process take `path` (for tests and benchmarks that
/// compare paths in one process). Because the paths give identical bits, switching while other
/// threads compute changes their speed, never their results.
pub fn force(path: SimdPath) -> Result<(), SimdError> {
    if !path.supported() {
        return Err(SimdError::Unsupported(path.name()));
    }
    ACTIVE.store(path.code(), Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_supported() {
        for p in SimdPath::ALL {
            assert_eq!(SimdPath::parse(p.name()), Ok(p));
        }
        assert_eq!(SimdPath::parse(" AVX2 "), Ok(SimdPath::Avx2));
        assert!(matches!(
            SimdPath::parse("sse"),
            Err(SimdError::UnknownPath(_))
        ));
        assert!(supported_paths().contains(&SimdPath::Portable));
        assert!(active().supported());
        // Falling back never lands on an unsupported path.
        for p in SimdPath::ALL {
            assert!(p.or_below().supported());
        }
    }
}
