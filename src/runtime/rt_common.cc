// binmx runtime: see rt_common.h (the error type; this file keeps the library non-empty).
#include "rt_common.h"
