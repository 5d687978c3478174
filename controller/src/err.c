/* err.c: names and messages for the codes in err.h. */
#include "err.h"

const char *jp_strerror(int code)
{
    switch (code) {
    case JP_OK: return "success";
#define JP_ERR_CASE_(name, msg) case JP_E##name: return msg;
    JP_ERRNO_MAP(JP_ERR_CASE_)
#undef JP_ERR_CASE_
    default: return "unknown error";
    }
}

const char *jp_errname(int code)
{
    switch (code) {
    case JP_OK: return "OK";
#define JP_ERR_NAME_(name, msg) case JP_E##name: return #name;
    JP_ERRNO_MAP(JP_ERR_NAME_)
#undef JP_ERR_NAME_
    default: return "UNKNOWN";
    }
}

int jp_err_transient(int code)
{
    switch (code) {
    case JP_ETIMEOUT: case JP_ECONNREFUSED: case JP_EDNS: case JP_ENETWORK:
    case JP_ETHROTTLED: case JP_ESERVER: case JP_ESTALE: case JP_ECONFLICT: case JP_EGONE:
    case JP_EIO:
        return 1;
    default:
        return 0;
    }
}
