/* Preloaded by test_blas_check: an OpenBLAS that does not know this CPU.
 * openblas_get_corename() reports the generic "Prescott" kernels unless
 * OPENBLAS_CORETYPE chose others, as a DYNAMIC_ARCH build would. */
#include <stdlib.h>

char *openblas_get_corename(void)
{
    char *set = getenv("OPENBLAS_CORETYPE");
    return set ? set : "Prescott";
}
