/* slabcache.h: C ABI of the slabcache slab allocator (libslabcache_malloc.so).
 *
 * Every byte of allocator metadata lives out of band, so every free is
 * checked: sc_free refuses a double free or a pointer it never handed out and
 * says so, instead of corrupting the heap.
 *
 *   void *p = sc_malloc(100);
 *   sc_free(p);                       -> SC_OK
 *   sc_free(p);                       -> SC_EDOUBLE_FREE (nothing changes)
 *
 * Built with `cargo build --release -p slabcache-malloc --features preload`,
 * the library also defines malloc/free/calloc/realloc/posix_memalign/
 * aligned_alloc/memalign/valloc/pvalloc/malloc_usable_size/free_sized and
 * the C++ sized deletes for LD_PRELOAD; a refused free() (or realloc,
 * malloc_usable_size, sized free) is reported on stderr and aborts, or is
 * only logged with SLABCACHE_ON_INVALID_FREE=log. SLABCACHE_PROFILE=hardened
 * selects the hardened profile (docs/allocator.md).
 */
#ifndef SLABCACHE_H
#define SLABCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SC_OK 0
#define SC_EINVALID_FREE (-1)
#define SC_EDOUBLE_FREE (-2)

/* size bytes, 16-byte aligned; NULL (errno ENOMEM) on failure. */
void *sc_malloc(size_t size);
/* n * size zeroed bytes; NULL on overflow or failure. */
void *sc_calloc(size_t n, size_t size);
/* Like realloc; an invalid p gives NULL (errno EINVAL) and changes nothing. */
void *sc_realloc(void *p, size_t size);
/* align: a power of two (up to 4 KiB from slabs, larger from own mappings). */
void *sc_aligned_alloc(size_t align, size_t size);
/* 0, EINVAL or ENOMEM. */
int sc_posix_memalign(void **out, size_t align, size_t size);
/* SC_OK (also for NULL), SC_EDOUBLE_FREE or SC_EINVALID_FREE. */
int sc_free(void *p);
/* Usable bytes of a live allocation; 0 for NULL or anything else. */
size_t sc_usable_size(void *p);
/* Frees refused so far (sc_free errors and, with preload, free/realloc). */
uint64_t sc_refused_frees(void);

#ifdef __cplusplus
}
#endif

#endif /* SLABCACHE_H */
