//! The C ABI through its Rust declarations: allocation, realloc contents,
//! alignment, and refused frees.

use slabcache_malloc::*;

#[test]
fn malloc_realloc_free_and_refusals() {
    // SAFETY: exercising the C ABI as a C caller would.
    unsafe {
        let p = sc_malloc(10) as *mut u8;
        assert!(!p.is_null());
        assert_eq!(p as usize % 16, 0);
        for i in 0..10 {
            *p.add(i) = i as u8;
        }
        let q = sc_realloc(p.cast(), 5000) as *mut u8;
        assert!(!q.is_null());
        assert!((0..10).all(|i| *q.add(i) == i as u8));
        assert!(sc_usable_size(q.cast()) >= 5000);
        let before = sc_refused_frees();
        assert_eq!(
            sc_free(p.cast()),
            SC_EDOUBLE_FREE,
            "realloc moved and freed p"
        );
        assert_eq!(sc_free(q.add(16).cast()), SC_EINVALID_FREE);
        let mut local = 0u64;
        assert_eq!(sc_free((&mut local as *mut u64).cast()), SC_EINVALID_FREE);
        assert_eq!(sc_free(q.cast()), SC_OK);
        assert_eq!(sc_free(q.cast()), SC_EDOUBLE_FREE);
        assert_eq!(sc_free(std::ptr::null_mut()), SC_OK);
        assert!(sc_refused_frees() >= before);
        assert!(sc_realloc((&mut local as *mut u64).cast(), 10).is_null());

        let z = sc_calloc(100, 100) as *mut u8;
        assert!((0..10_000).all(|i| *z.add(i) == 0));
        assert_eq!(sc_free(z.cast()), SC_OK);
        assert!(sc_calloc(usize::MAX, 2).is_null());

        for align in [16usize, 64, 4096, 1 << 16] {
            let a = sc_aligned_alloc(align, 100);
            assert_eq!(a as usize % align, 0);
            assert_eq!(sc_free(a), SC_OK);
        }
        assert!(sc_aligned_alloc(48, 100).is_null());
        let mut out = std::ptr::null_mut();
        assert_eq!(sc_posix_memalign(&mut out, 256, 1000), 0);
        assert_eq!(out as usize % 256, 0);
        assert_eq!(sc_free(out), SC_OK);
        assert_eq!(sc_posix_memalign(&mut out, 3, 1000), libc::EINVAL);
    }
}
