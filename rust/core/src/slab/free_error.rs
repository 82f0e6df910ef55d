//! The reason a free was refused (shared by the small, medium and large paths).

/// Why a free was refused. Carries no heap data, so the C ABI can report it
/// from inside `free` without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeError {
    /// The pointer is not (the start of) anything this allocator handed out,
    /// or the size given with it does not fit the allocation.
    Invalid(&'static str),
    /// The pointer was handed out once and is not allocated now.
    Double,
}
