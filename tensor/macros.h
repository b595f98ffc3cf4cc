// Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__)
#define FGVC_HD __host__ __device__
#else
#define FGVC_HD
#endif
