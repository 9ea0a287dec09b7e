/* Anchor source of libbinmx_runtime.so: the library's code is binmx_runtime_static, linked
 * whole; a shared library target needs at least one source file of its own. */
typedef int binmx_runtime_anchor_unused;
