//! The one audited module holding `unsafe` in Ember's task shipping.
//!
//! Rust cannot serialize closures, so Ember ships *types*: every lineage node
//! type has a monomorphized decoder function, and the driver sends that
//! function's address as an offset from `anchor`. The executor adds its own
//! anchor address back. Address-space layout randomisation moves the whole
//! image, so offsets survive it — but only between processes running the
//! **byte-identical executable**. [`super::exe_hash`] enforces that before any
//! offset is turned back into a function pointer, and the transport (issue:
//! executor processes) authenticates every frame that can carry one, because
//! a forged offset is a jump to an arbitrary address.
//!
//! The second unsafe operation conjures zero-sized closures: a non-capturing
//! closure has no bytes, so a value of its type can be materialised on the
//! executor without shipping anything. [`conjure`] refuses (at compile time)
//! any type that is not zero-sized.

use super::DecodeFn;

/// The fixed point that decoder addresses are measured from. Never inlined,
/// so it has exactly one address in the image.
#[inline(never)]
fn anchor() {
    std::hint::black_box(());
}

fn anchor_addr() -> i64 {
    anchor as *const () as usize as i64
}

/// The distance from the anchor to a decoder function in this image.
pub(crate) fn offset_of(f: DecodeFn) -> i64 {
    f as *const () as usize as i64 - anchor_addr()
}

/// Turns an offset produced by [`offset_of`] back into a decoder.
///
/// # Safety
/// `offset` must have been produced by [`offset_of`] in a process running the
/// byte-identical executable, and must have reached this process over an
/// authenticated channel. The caller ([`super::decode_stage`]) checks the
/// executable hash carried by the blob before calling this.
pub(crate) unsafe fn decoder_at(offset: i64) -> DecodeFn {
    let addr = anchor_addr().wrapping_add(offset) as usize;
    // SAFETY: per the contract above, `addr` is the address of a function of
    // type `DecodeFn` in this very image.
    unsafe { std::mem::transmute::<usize, DecodeFn>(addr) }
}

struct AssertZeroSized<F>(std::marker::PhantomData<F>);

impl<F> AssertZeroSized<F> {
    const OK: () = assert!(
        std::mem::size_of::<F>() == 0,
        "Ember closures must not capture variables: they are shipped to executors as code, \
         not data. Pass captured state explicitly with the `*_with(state, f)` variant \
         (e.g. `map_with(state, |state, x| ...)`) or through a broadcast variable."
    );
}

/// Compile-time check that `F` is zero-sized (a non-capturing closure or a
/// function item). Referencing it in a generic function makes a capturing
/// closure a compile error at the call site that instantiates it.
pub const fn assert_zero_sized<F>() {
    #[allow(clippy::let_unit_value)]
    let () = AssertZeroSized::<F>::OK;
}

/// Materialises a value of a zero-sized closure type.
pub fn conjure<F: Copy>() -> F {
    assert_zero_sized::<F>();
    // SAFETY: `F` is zero-sized (checked at compile time above), so reading
    // it through a dangling but well-aligned, non-null pointer reads no bytes,
    // and `Copy` rules out types with drop glue or ownership invariants.
    // Closure and fn-item types carry no validity invariant beyond their
    // (empty) layout.
    unsafe { std::ptr::read(std::ptr::NonNull::<F>::dangling().as_ptr()) }
}
