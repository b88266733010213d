/*
 * bcryptprimitives.dll for wine, which (in version 8) does not ship one. Rust's std on Windows
 * takes its randomness from ProcessPrng in this DLL (HashMap keys, among others), so without it
 * every Rust binary fails to start under wine. This one function forwards to RtlGenRandom
 * (advapi32's SystemFunction036), which wine has. Built by .ci/run with mingw, placed in the
 * wine prefix's system32; never shipped.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
