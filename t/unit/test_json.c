/*
 * JSON writing and query parameters.  The vectors marked "Prometheus 2.42"
 * were taken from a real Prometheus 2.42.0 (Go 1.19): exemplars written to
 * it by remote write and its /api/v1/query_exemplars answers, including
 * its error answers for bad parameters.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_json.h"
#include "pg_time.h"


typedef struct {
    uint64_t        bits;
    const char     *expect;
} value_vector_t;

typedef struct {
    int64_t         ms;
    const char     *expect;
} ts_vector_t;

typedef struct {
    const char     *in;
    size_t          len;
    const char     *expect;
} str_vector_t;

typedef struct {
    const char     *args;
    int             status;
    const char     *body;
} param_vector_t;


/*
 * Prometheus 2.42: values, timestamps, label strings (series labels and
 * exemplar labels, some with invalid UTF-8), and parameter errors.
 */

static const value_vector_t  value_vectors[] = {
    { 0x4018000000000000ULL, "6" },
    { 0x0000000000000000ULL, "0" },
    { 0x8000000000000000ULL, "-0" },
    { 0x3ff8000000000000ULL, "1.5" },
    { 0x3fb999999999999aULL, "0.1" },
    { 0x3fd5555555555555ULL, "0.3333333333333333" },
    { 0x3eb0c6f7a0b5ed8dULL, "0.000001" },
    { 0x3eb0c2ac1dbbe3d8ULL, "9.99e-07" },
    { 0x3e7ad7f29abcaf48ULL, "1e-07" },
    { 0x444b1ae4d6e2ef50ULL, "1e+21" },
    { 0x444b13f47b891b9eULL, "999000000000000000000" },
    { 0x4415af1d78b58c40ULL, "100000000000000000000" },
    { 0x7e41eb2d66005835ULL, "1.5e+300" },
    { 0x0000000000000001ULL, "5e-324" },
    { 0x7fefffffffffffffULL, "1.7976931348623157e+308" },
    { 0xc004000000000000ULL, "-2.5" },
    { 0x419d6f34547df3b6ULL, "123456789.123" },
    { 0x4340000000000000ULL, "9007199254740992" },
    { 0x4340000000000001ULL, "9007199254740994" },
    { 0x430c6bf526340002ULL, "1000000000000000.2" },
    { 0x7ff8000000000000ULL, "NaN" },
    { 0x7ff0000000000000ULL, "+Inf" },
    { 0xfff0000000000000ULL, "-Inf" },
    { 0x3ee4f8b588e368f1ULL, "0.00001" },
    { 0x3c36b082c2148b8eULL, "1.23e-18" },
    { 0xbe7ad7f29abcaf48ULL, "-1e-07" },
    { 0x43e0000000000000ULL, "9223372036854776000" },
    { 0x4341c37937e08000ULL, "10000000000000000" },
    { 0x43e56a95319d63e1ULL, "12345678901234567000" },
    { 0x4059000000000000ULL, "100" },
    { 0x3fd3333333333333ULL, "0.3" },
    { 0x3ec4f8b588e368f1ULL, "0.0000025" },
    { 0x4011666666666666ULL, "4.35" },
    { 0x4480f0cf064dd592ULL, "1e+22" },
    { 0xc44b1ae4d6e2ef50ULL, "-1e+21" },
    { 0x40fe240c9fcb5c8aULL, "123456.7890123" },
    { 0x3fd3333333333334ULL, "0.30000000000000004" },
    { 0x3e70000000000000ULL, "5.960464477539063e-08" },
    { 0x5940000000000000ULL, "8.263199609878108e+121" },
    { 0x0010000000000000ULL, "2.2250738585072014e-308" },
    { 0x4340000000000000ULL, "9007199254740992" },
    { 0x3eb4b3fd5942cd96ULL, "0.000001234" },
    { 0x430c6bf52633ffffULL, "999999999999999.9" },
    { 0x430c6bf526340000ULL, "1000000000000000" },
    { 0x0000000000000003ULL, "1.5e-323" },
    { 0x40614d0c48fb7848ULL, "138.40774964442448" },
    { 0x8000000000000100ULL, "-1.265e-321" },
    { 0xb440000000000000ULL, "-5.0978941156238473e-57" },
    { 0x1660000000000000ULL, "6.532100883151302e-201" },
    { 0x407e776187359df4ULL, "487.4613105863966" },
    { 0xdba0000000000000ULL, "-2.2713710134237715e+133" },
    { 0x4053cf088d016200ULL, "79.2348968995575" },
    { 0x4042ada3fd2cb5a0ULL, "37.3565670460041" },
    { 0x5560000000000000ULL, "1.7917957937422434e+103" },
    { 0xde3a5db5154ed512ULL, "-8.230816076112065e+145" },
    { 0x4015333333333333ULL, "5.3" },
    { 0xc07e328888acf40aULL, "-483.1583334690082" },
    { 0xf5bb9188b80599e9ULL, "-1.324613892748245e+259" },
    { 0x401a645a1cac0831ULL, "6.598" },
    { 0x401dc083126e978dULL, "7.438" },
    { 0xb010000000000000ULL, "-3.454467422037778e-77" },
    { 0x9cb471a55349da48ULL, "-2.1160543835128075e-170" },
    { 0xc07d2edd95b62e04ULL, "-466.9290978542706" },
    { 0xc084d728c0e20642ULL, "-666.8948991449508" },
    { 0x1f70000000000000ULL, "2.913414348125081e-157" },
    { 0x44480030f3c668b1ULL, "885471273202793700000" },
    { 0x69dd649317788b95ULL, "8.9995148472923e+201" },
    { 0x407e803490741358ULL, "488.0128330740167" },
    { 0x02b087f806faadb1ULL, "1.0110828975116374e-295" },
    { 0x3716e7ea40041e00ULL, "2.5678422310979264e-43" },
    { 0xc0d76560fbbe9381ULL, "-23957.515365261122" },
    { 0x4000000000000000ULL, "2" },
    { 0x0289eb06a2a866b4ULL, "1.9815130555069182e-296" },
    { 0xc08406efeadf9500ULL, "-640.867147204146" },
    { 0x50e9e079c79d4440ULL, "6.136495053205129e+81" },
    { 0xeae0000000000000ULL, "-6.421064332944792e+206" },
    { 0x401733eab367a0f9ULL, "5.8007" },
    { 0x404cb3a539a7bb60ULL, "57.4034797734264" },
    { 0x4023666666666666ULL, "9.7" },
    { 0x4079290b93151a94ULL, "402.56532581561737" },
    { 0xd5e0000000000000ULL, "-4.586997231980143e+105" },
    { 0xf98ddc84f59dc887ULL, "-3.3083865315861132e+277" },
    { 0x4089a158c09aef3eULL, "820.1683361152898" },
    { 0x309944e2f5b5b934ULL, "1.3966598677731951e-74" },
    { 0x4008e40f23897204ULL, "3.111357" },
    { 0xb130000000000000ULL, "-9.055679078826712e-72" },
    { 0x4016eb851eb851ecULL, "5.73" },
    { 0xeaf5c033a5cd95e7ULL, "-1.745790119494355e+207" },
    { 0xc0594e514fbf75f8ULL, "-101.22371286103578" },
    { 0x40718b5f70dc047cULL, "280.71080099052756" },
    { 0xe9a413ca59758f83ULL, "-7.684092268600175e+200" },
    { 0x9733ef95bea7c879ULL, "-6.667426339311783e-197" },
    { 0xc360000000000000ULL, "-36028797018963970" },
    { 0x4c0015082b265442ULL, "1.2618666082489547e+58" },
    { 0xc07e27705530d8acULL, "-482.4649249942838" },
    { 0xc08ab75ee31c3a1dULL, "-854.9213316159472" },
    { 0xd940000000000000ULL, "-8.263199609878108e+121" },
    { 0x2fcf9616f48fe7d3ULL, "2.1311289469912362e-78" },
    { 0x3ff2e40639d5e4a4ULL, "1.18067" },
    { 0x401280d1b71758e2ULL, "4.6258" },
    { 0x7afb6462db8ae021ULL, "2.545785349692968e+284" },
    { 0x63243e5303e2e7c4ULL, "3.819901777071253e+169" },
    { 0xd733230a8660194dULL, "-1.150560666841868e+112" },
    { 0x407460849dbe0eb4ULL, "326.0323769973868" },
    { 0x5a6d1efce7b128fdULL, "3.9425314043114345e+127" },
    { 0x40862919b4083422ULL, "709.1375504151258" },
    { 0x880e180b206a985aULL, "-7.120535516938481e-270" },
    { 0x3ff0000000000000ULL, "1" },
    { 0x4015e9622d2d6f80ULL, "5.477913576028982" },
    { 0xc082c069b07b4bd8ULL, "-600.0516061432381" },
    { 0x4005d042d8c2a455ULL, "2.72669" },
    { 0x4013333333333333ULL, "4.8" },
    { 0x40101a9fbe76c8b4ULL, "4.026" },
    { 0x09a0000000000000ULL, "2.5405852245238005e-262" },
    { 0x4036f3d5bb756140ULL, "22.95248004546852" },
    { 0x401599999999999aULL, "5.4" },
    { 0xd9e46a515a11494fULL, "-1.0796526761379076e+125" },
    { 0x40236a71de69ad43ULL, "9.7079" },
    { 0xc07ee833084d57a6ULL, "-494.51245908939234" },
    { 0x44d5017262279051ULL, "3.9678554031242035e+23" },
    { 0x2c0d0a30feb89fffULL, "1.69943740388392e-96" },
    { 0x401f147ae147ae14ULL, "7.77" },
    { 0x407cc54b81288b50ULL, "460.3309337219007" },
    { 0x37e103558cb25244ULL, "1.5623995124239054e-39" },
    { 0x36d71c3fc9530f5eULL, "1.619224779391157e-44" },
};

static const ts_vector_t  ts_vectors[] = {
    { -1500, "-1.500" },
    { -1000, "-1" },
    { -999, "-0.999" },
    { -10, "-0.010" },
    { -1, "-0.001" },
    { 0, "0" },
    { 1, "0.001" },
    { 5, "0.005" },
    { 10, "0.010" },
    { 470, "0.470" },
    { 479, "0.479" },
    { 999, "0.999" },
    { 1000, "1" },
    { 1001, "1.001" },
    { 1010, "1.010" },
    { 12345678, "12345.678" },
};

static const str_vector_t  str_vectors[] = {
    { "q\"uote", 6,
      "\"q\\\"uote\"" },
    { "back\\slash", 10,
      "\"back\\\\slash\"" },
    { "new\nline", 8,
      "\"new\\nline\"" },
    { "cr\rtab\t", 7,
      "\"cr\\rtab\\t\"" },
    { "bs\x08"
      "ff\x0c", 6,
      "\"bs\\u0008ff\\u000c\"" },
    { "c\x01\x1f\x7f", 4,
      "\"c\\u0001\\u001f\x7f\"" },
    { "<a>&b", 5,
      "\"\\u003ca\\u003e\\u0026b\"" },
    { "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", 17,
      "\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"" },
    { "ls\xe2\x80\xa8ps\xe2\x80\xa9", 10,
      "\"ls\\u2028ps\\u2029\"" },
    { "rep\xef\xbf\xbd", 6,
      "\"rep\xef\xbf\xbd\"" },
    { "sl/ash", 6,
      "\"sl/ash\"" },
    { "nbsp\xc2\xa0shy\xc2\xad", 11,
      "\"nbsp\xc2\xa0shy\xc2\xad\"" },
    { "c1\xc2\x85\xc2\x9f", 6,
      "\"c1\xc2\x85\xc2\x9f\"" },
    { "\x00nul", 4,
      "\"\\u0000nul\"" },
    { "\xffPADDING", 8,
      "\"\\ufffdPADDING\"" },
    { "\xc3PADDING", 8,
      "\"\\ufffdPADDING\"" },
    { "\xed\xa0\x80PADDING", 10,
      "\"\\ufffd\\ufffd\\ufffdPADDING\"" },
    { "\xe2\x82ZPADDING", 10,
      "\"\\ufffd\\ufffdZPADDING\"" },
    { "\xf4\x90\x80\x80PADDING", 11,
      "\"\\ufffd\\ufffd\\ufffd\\ufffdPADDING\"" },
    { "\xc0\xafPADDING", 9,
      "\"\\ufffd\\ufffdPADDING\"" },
    { "a\x80"
      "bPADDING", 10,
      "\"a\\ufffdbPADDING\"" },
    { "\xf0\x9f\x98PADDING", 10,
      "\"\\ufffd\\ufffd\\ufffdPADDING\"" },
};

static const param_vector_t  param_vectors[] = {
    { "start=x", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"x\\\" to a valid timestamp\"}" },
    { "end=abc%22q", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"end\\\": invalid time value for 'end"
      "': cannot parse \\\"abc\\\\\\\"q\\\" to a valid timestamp\"}" },
    { "start=10&end=5", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"end timestamp must not be before start timestamp\"}" },
    { "start=1e400", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"1e400\\\" to a valid timestamp\"}" },
    { "start=%2Bnan", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"+nan\\\" to a valid timestamp\"}" },
    { "start=%2010", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\" 10\\\" to a valid timestamp\"}" },
    /* more than 9 fraction digits: 3.5's Go takes them (2.42's did not) */
    { "start=2021-09-30T05:38:22.1234567891234Z", 200, NULL },
    { "start=2021-02-29T05:38:22Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-02-29T05:38:22Z\\\" to a valid "
      "timestamp\"}" },
    { "start=2021-09-30T24:00:00Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-09-30T24:00:00Z\\\" to a valid "
      "timestamp\"}" },
    { "start=x%0Ay%09%C3%A9%E2%80%A8%FF%00%1B%7F%C2%85", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"x\\\\ny\\\\t\xc3\xa9\\\\u2028\\\\xff"
      "\\\\x00\\\\x1b\\\\x7f\\\\u0085\\\" to a valid timestamp\"}" },
    { "start=2021-09-30T05:38:22.0005Z&end=2021-09-30T05:38:22.0001"
      "Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"end timestamp must not be before start timestamp\"}" },
    { "start=x;y", 200, NULL },
    { "start=%zz&start=abc", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"abc\\\" to a valid timestamp\"}" },
    { "start=&start=abc", 200, NULL },
    { "start=abc&start=def", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"abc\\\" to a valid timestamp\"}" },
    { "start=5&end=1e19", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"end timestamp must not be before start timestamp\"}" },
    { "start=%E2%80", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"\\\\xe2\\\\x80\\\" to a valid timest"
      "amp\"}" },
    { "start=%2B2021-09-30T05:38:22Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"+2021-09-30T05:38:22Z\\\" to a valid"
      " timestamp\"}" },
    { "start=0021-09-30T05:38:22Z&end=0021-09-30T05:38:22Z", 200, NULL },
    { "start=-021-09-30T05:38:22Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"-021-09-30T05:38:22Z\\\" to a valid "
      "timestamp\"}" },
    { "start=2021-09-30T5:38:22Z", 200, NULL },
    { "start=2021-09-30T05:38:22%2B99:99", 200, NULL },
    { "start=2021-09-30T05:38:22,5Z", 200, NULL },
    { "start=1e", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"1e\\\" to a valid timestamp\"}" },
    { "start=0x10", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"0x10\\\" to a valid timestamp\"}" },
    { "start=.5&end=5.", 200, NULL },
    { "start=1__0", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"1__0\\\" to a valid timestamp\"}" },
    { "start=_1", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"_1\\\" to a valid timestamp\"}" },
    { "start=1_", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"1_\\\" to a valid timestamp\"}" },
    { "start=0x_1p0", 200, NULL },
    { "start=0x1p-1_0", 200, NULL },
    { "start=infinity&end=-INF", 200, NULL },
    { "start=infinit", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"infinit\\\" to a valid timestamp\"}" },
    { "start=2021-09-30T05:38:22.Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-09-30T05:38:22.Z\\\" to a valid"
      " timestamp\"}" },
    { "start=2021-09-30T05:38Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-09-30T05:38Z\\\" to a valid tim"
      "estamp\"}" },
    { "start=2021-13-01T00:00:00Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-13-01T00:00:00Z\\\" to a valid "
      "timestamp\"}" },
    { "start=2000-02-29T00:00:00Z&end=2000-02-29T00:00:00Z", 200, NULL },
    { "start=1900-02-29T00:00:00Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"1900-02-29T00:00:00Z\\\" to a valid "
      "timestamp\"}" },
    { "start=2021-09-30T05:38:22%2B0200", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-09-30T05:38:22+0200\\\" to a va"
      "lid timestamp\"}" },
    { "start=2021-09-30T05:38:22z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-09-30T05:38:22z\\\" to a valid "
      "timestamp\"}" },
    { "start=2021-09-30%2005:38:22Z", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"2021-09-30 05:38:22Z\\\" to a valid "
      "timestamp\"}" },
    { "sta%72t=abc", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"abc\\\" to a valid timestamp\"}" },
    { "start=%e2%80%a8", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"\\\\u2028\\\" to a valid timestamp\""
      "}" },
    { "start=yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyy", 400,
      "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
      "\"invalid parameter \\\"start\\\": invalid time value for 's"
      "tart': cannot parse \\\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
      "yyyyyyyyyyyyyyyyyyyyyyyy\\\" to a valid timestamp\"}" },
};


/* a malloc-backed pg_allocator_t that frees everything at once */
typedef struct arena_block_s  arena_block_t;

struct arena_block_s {
    arena_block_t  *next;
    double          align[];
};

typedef struct {
    arena_block_t  *blocks;
    size_t          left;      /* allocations allowed, (size_t) -1: any */
} arena_t;


static void *
arena_alloc(void *ctx, size_t size)
{
    arena_t        *a = ctx;
    arena_block_t  *b;

    if (a->left == 0) {
        return NULL;
    }

    if (a->left != (size_t) -1) {
        a->left--;
    }

    b = malloc(sizeof(arena_block_t) + size);
    if (b == NULL) {
        return NULL;
    }

    b->next = a->blocks;
    a->blocks = b;

    return b->align;
}


static void
arena_free(arena_t *a)
{
    arena_block_t  *b;

    while (a->blocks) {
        b = a->blocks;
        a->blocks = b->next;
        free(b);
    }
}


#define ARENA  { NULL, (size_t) -1 }


static void
assert_buf(pg_json_buf_t *b, const char *expect)
{
    assert_false(b->failed);
    assert_int_equal(b->len, strlen(expect));
    assert_memory_equal(b->data, expect, b->len);
}


static pg_str_t
S(const char *s)
{
    pg_str_t  str;

    str.data = (const uint8_t *) s;
    str.len = strlen(s);

    return str;
}


/* ------------------------------------------------------------------ */


static void
test_values(void **state)
{
    arena_t         a = ARENA;
    pg_allocator_t  alloc = { arena_alloc, &a };
    pg_json_buf_t   b;
    uint8_t         out[PG_JSON_NUMBER_MAX];
    char            quoted[PG_JSON_NUMBER_MAX + 2];
    size_t          i, n;
    double          v;

    for (i = 0; i < sizeof(value_vectors) / sizeof(value_vectors[0]); i++) {
        memcpy(&v, &value_vectors[i].bits, sizeof(double));

        n = pg_json_format_value(out, v);

        if (n != strlen(value_vectors[i].expect)
            || memcmp(out, value_vectors[i].expect, n) != 0)
        {
            fail_msg("%a: \"%.*s\", Prometheus \"%s\"", v, (int) n, out,
                     value_vectors[i].expect);
        }

        pg_json_init(&b, alloc);
        pg_json_value(&b, v);
        snprintf(quoted, sizeof(quoted), "\"%s\"", value_vectors[i].expect);
        assert_buf(&b, quoted);
    }

    arena_free(&a);
}


/*
 * The reference for pg_json_shortest(): the printf and strtod search it
 * used before its exact integer path (commit 3e80de2), verbatim.  Its 16
 * and 17 digit figures and the lopsided intervals of powers of two were
 * checked against Go; the exact path must find the same digits.
 */

/*
 * Adds one unit in the last digit of a "d.ddde+XX" string in place; fails
 * when that would carry into a new leading digit (9.99 -> 10.0), which the
 * next precision tries anyway.
 */
static int
ref_next_up(char *buf)
{
    char  *e;

    e = strchr(buf, 'e');
    if (e == NULL) {
        return 0;
    }

    while (--e >= buf) {
        if (*e < '0' || *e > '9') {
            continue;
        }

        if (*e < '9') {
            (*e)++;
            return 1;
        }

        *e = '0';
    }

    return 0;
}


/*
 * The shortest digits.  Two facts make this simple: a double's interval
 * of values reading back as it is narrower than a unit in the 15th digit,
 * so at most one decimal of up to 15 digits reads back as v; and for 16
 * and 17 digits the correctly rounded candidate (%.*e) is the closest one,
 * which is what Go picks.  Powers of two have a lopsided interval and
 * subnormals fewer digits: they take a slower search.
 */
static size_t
ref_shortest(double v, uint8_t *digits, int *point)
{
    char      buf[40], *e;
    int       prec, exp10, lo, hi, k;
    size_t    n, i;
    uint64_t  bits, c;
    double    w, r;

    static const double  pow10[] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
    };

    v = fabs(v);

    memcpy(&bits, &v, sizeof(double));

    prec = 15;

    if (v >= 1e-6 && v < 1e15) {

        /*
         * Up to 15 digits without printf: if w * 10^-k (w an integer
         * below 10^15) reads back as v, v * 10^k is within 0.11 of w
         * before rounding and 0.18 after, and the division, of exact
         * operands, rounds as strtod() would.  The loop reaches every k
         * such a w may have, so when it finds none, 15 digits do not do.
         */
        for (k = 0; k <= 22; k++) {
            w = v * pow10[k];

            if (w >= 1e15) {
                break;
            }

            r = floor(w + 0.5);

            if (fabs(w - r) <= 0.2 && r / pow10[k] == v && r >= 1) {
                c = (uint64_t) r;
                n = 0;

                while (c) {
                    buf[n++] = (char) ('0' + c % 10);
                    c /= 10;
                }

                *point = (int) n - k;

                for (i = 0; i < n; i++) {
                    digits[i] = buf[n - 1 - i];
                }

                while (n > 1 && digits[n - 1] == '0') {
                    n--;
                }

                return n;
            }
        }

        prec = 16;
    }

    if ((bits >> 52) == 0) {

        /* a subnormal: the interval is symmetric, p digits then p + 1 */
        lo = 1;
        hi = 17;

        while (lo < hi) {
            prec = (lo + hi) / 2;
            snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

            if (strtod(buf, NULL) == v) {
                hi = prec;
            } else {
                lo = prec + 1;
            }
        }

        prec = lo;
        snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

    } else if ((bits & 0xfffffffffffffULL) != 0) {

        for ( /* void */ ; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

            if (prec == 17 || strtod(buf, NULL) == v) {
                break;
            }
        }

    } else {
        /*
         * A power of two: the interval is twice as wide above v as below,
         * so the candidate just above v may read back when the nearest
         * does not; search linearly and try both.
         */
        for (prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

            if (prec == 17 || strtod(buf, NULL) == v) {
                break;
            }

            if (strtod(buf, NULL) < v && ref_next_up(buf)
                && strtod(buf, NULL) == v)
            {
                break;
            }
        }
    }

    /* "d.ddde+XX": collect the digits, skipping the decimal point */
    n = 0;

    for (i = 0; buf[i] != '\0' && buf[i] != 'e'; i++) {
        if (buf[i] >= '0' && buf[i] <= '9') {
            digits[n++] = buf[i];
        }
    }

    e = buf + i;
    exp10 = (*e == 'e') ? atoi(e + 1) : 0;

    while (n > 1 && digits[n - 1] == '0') {
        n--;
    }

    *point = exp10 + 1;

    return n;
}


/* the next double up and down */
static double
next_double(double v, int up)
{
    uint64_t  bits;

    memcpy(&bits, &v, sizeof(double));
    bits += up ? 1 : (uint64_t) -1;
    memcpy(&v, &bits, sizeof(double));

    return v;
}


static void
check_shortest(double v)
{
    uint8_t  d[17], rd[17];
    size_t   n, rn;
    int      point, rpoint;

    n = pg_json_shortest(v, d, &point);
    rn = ref_shortest(v, rd, &rpoint);

    if (n != rn || point != rpoint || memcmp(d, rd, n) != 0) {
        fail_msg("%a (%.17g): 0.%.*s e%d, the printf search 0.%.*s e%d",
                 v, v, (int) n, d, point, (int) rn, rd, rpoint);
    }
}


/*
 * The exact integer path finds the digits the printf search finds, on
 * values from 1e-6 to 1e15 (where it runs) and around: random bits at
 * every exponent there, short decimals and their neighbours (16 and 17
 * digits), powers of two and of ten and their neighbours, and the
 * boundaries of the range.
 */
static void
test_values_shortest(void **state)
{
    int       k, i, j;
    double    v, p10;
    uint64_t  bits, x;

    x = 0x2545f4914f6cdd1dULL;

    for (i = 0; i < 300000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;

        /* exponents of 2^-22 .. 2^52 */
        bits = (x & 0xfffffffffffffULL)
               | ((uint64_t) (1001 + (int) (x >> 52) % 75) << 52);
        memcpy(&v, &bits, sizeof(double));
        check_shortest(v);
    }

    for (k = 1; k < 20000; k++) {
        for (j = -6; j <= 14; j += 4) {
            v = k * pow(10, j - 4);
            check_shortest(v);
            check_shortest(next_double(v, 1));
            check_shortest(next_double(v, 0));
        }

        v = k * 0.001;          /* exemplar_bench.py's values */
        check_shortest(v);
    }

    for (k = -22; k <= 52; k++) {
        v = ldexp(1, k);
        check_shortest(v);
        check_shortest(next_double(v, 1));
        check_shortest(next_double(v, 0));
        check_shortest(ldexp(3, k));
        check_shortest(ldexp(0x1fffffffffffffULL, k - 52));
    }

    for (k = -7; k <= 16; k++) {
        p10 = pow(10, k);

        for (v = p10, j = 0; j < 50; j++) {
            check_shortest(v);
            v = next_double(v, 1);
        }

        for (v = p10, j = 0; j < 50; j++) {
            check_shortest(v);
            v = next_double(v, 0);
        }
    }

    check_shortest(0.1);
    check_shortest(1.0 / 3);
    check_shortest(2.0 / 3);
    check_shortest(0.3);
    check_shortest(123456.789);
    check_shortest(5e-324);
    check_shortest(DBL_MAX);
    check_shortest(2.2250738585072014e-308);
}


/* any double reads back from what is written, within the 40-byte bound */
static void
test_values_round_trip(void **state)
{
    uint8_t   out[PG_JSON_NUMBER_MAX + 1];
    uint64_t  bits, x;
    size_t    i, n;
    double    v, r;

    x = 88172645463325252ULL;

    for (i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;

        bits = (i % 3 == 0) ? x
               : (i % 3 == 1) ? (x & 0x800fffffffffffffULL)
                                | ((uint64_t) (1023 + (int) (x % 140) - 70)
                                   << 52)
               : (x & 0x8000000000000000ULL)
                 | ((uint64_t) (x >> 11 & 0x7ff) << 52);
        memcpy(&v, &bits, sizeof(double));

        n = pg_json_format_value(out, v);
        assert_true(n < PG_JSON_NUMBER_MAX);
        out[n] = '\0';

        if (isnan(v)) {
            assert_string_equal(out, "NaN");
            continue;
        }

        r = strtod((char *) out + (out[0] == '+'), NULL);

        if (memcmp(&r, &v, sizeof(double)) != 0) {
            fail_msg("%a printed as %s", v, out);
        }
    }
}


static void
test_timestamps(void **state)
{
    uint8_t  out[PG_JSON_NUMBER_MAX];
    size_t   i, n;

    /* Prometheus 2.42 */
    for (i = 0; i < sizeof(ts_vectors) / sizeof(ts_vectors[0]); i++) {
        n = pg_json_format_timestamp(out, ts_vectors[i].ms);
        assert_int_equal(n, strlen(ts_vectors[i].expect));
        assert_memory_equal(out, ts_vectors[i].expect, n);
    }

    /* jsonutil.MarshalTimestamp: 3 fraction digits, never trimmed */
    n = pg_json_format_timestamp(out, INT64_C(1600096945479));
    assert_memory_equal(out, "1600096945.479", n);
    n = pg_json_format_timestamp(out, INT64_C(1600096945470));
    assert_memory_equal(out, "1600096945.470", n);
    n = pg_json_format_timestamp(out, INT64_C(1600096945005));
    assert_memory_equal(out, "1600096945.005", n);
    n = pg_json_format_timestamp(out, INT64_C(1600096945000));
    assert_int_equal(n, 10);
    assert_memory_equal(out, "1600096945", n);

    n = pg_json_format_timestamp(out, INT64_MAX);
    assert_int_equal(n, strlen("9223372036854775.807"));
    assert_memory_equal(out, "9223372036854775.807", n);
    n = pg_json_format_timestamp(out, INT64_MIN);
    assert_int_equal(n, strlen("-9223372036854775.808"));
    assert_memory_equal(out, "-9223372036854775.808", n);
}


static void
test_strings(void **state)
{
    arena_t         a = ARENA;
    pg_allocator_t  alloc = { arena_alloc, &a };
    pg_json_buf_t   b;
    size_t          i;

    /* Prometheus 2.42 */
    for (i = 0; i < sizeof(str_vectors) / sizeof(str_vectors[0]); i++) {
        pg_json_init(&b, alloc);
        pg_json_string(&b, (const uint8_t *) str_vectors[i].in,
                       str_vectors[i].len);
        assert_buf(&b, str_vectors[i].expect);
    }

    /* Go's encoding/json: every control, U+FFFD for each invalid byte */
    pg_json_init(&b, alloc);
    pg_json_string(&b, (const uint8_t *) "\x00\x07\x08\x0b\x0c\x1b\x7f"
                   "\xc2\x80\xef\xbf\xbf\xf4\x8f\xbf\xbf\xf8\x80", 18);
    assert_buf(&b, "\"\\u0000\\u0007\\u0008\\u000b\\u000c\\u001b\x7f"
               "\xc2\x80\xef\xbf\xbf\xf4\x8f\xbf\xbf\\ufffd\\ufffd\"");

    pg_json_init(&b, alloc);
    pg_json_string(&b, (const uint8_t *) "", 0);
    assert_buf(&b, "\"\"");

    arena_free(&a);
}


static void
test_labels_and_errors(void **state)
{
    arena_t         a = ARENA;
    pg_allocator_t  alloc = { arena_alloc, &a };
    pg_json_buf_t   b;
    pg_label_t      l[4];

    /* Prometheus 3.5: every label in order, jsoniter's WriteString */
    l[0].name = S("a");
    l[0].value = S("1");
    l[1].name = S("k");
    l[1].value = S("x\"\\\n\x01");
    l[2].name = S("service.name");
    l[2].value = S("<&>\xe2\x80\xa8\xff");
    l[3].name = S("z<");
    l[3].value = S("");

    pg_json_init(&b, alloc);
    pg_json_labels(&b, l, 4);
    assert_buf(&b, "{\"a\":\"1\",\"k\":\"x\\\"\\\\\\n\\u0001\",\"service.name\":"
               "\"<&>\xe2\x80\xa8\xff\",\"z<\":\"\"}");

    pg_json_init(&b, alloc);
    pg_json_labels(&b, l, 0);
    assert_buf(&b, "{}");

    /* Prometheus 2.42 */
    pg_json_init(&b, alloc);
    pg_json_error(&b, "bad_data", (const uint8_t *) "end timestamp must not "
                  "be before start timestamp", 48);
    assert_buf(&b, "{\"status\":\"error\",\"errorType\":\"bad_data\","
               "\"error\":\"end timestamp must not be before start "
               "timestamp\"}");

    arena_free(&a);
}


/* jsoniter's WriteString, byte by byte: the reference for the fast one */
static size_t
ref_label_write(uint8_t *out, const uint8_t *s, size_t n)
{
    size_t   i;
    uint8_t  *p;

    p = out;
    *p++ = '"';

    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            *p++ = '\\';
            *p++ = s[i];

        } else if (s[i] == '\n' || s[i] == '\r' || s[i] == '\t') {
            *p++ = '\\';
            *p++ = s[i] == '\n' ? 'n' : s[i] == '\r' ? 'r' : 't';

        } else if (s[i] < 0x20) {
            p += sprintf((char *) p, "\\u%04x", s[i]);

        } else {
            *p++ = s[i];
        }
    }

    *p++ = '"';

    return p - out;
}


/*
 * Label strings 8 bytes at a time: every byte that needs escaping (and
 * its neighbours: 0x1f, 0x20, '!', '#', '[', ']', 0x7f, 0x80, 0xff) at
 * every position of strings of 0 to 40 bytes, and random strings.
 */
static void
test_label_strings(void **state)
{
    uint8_t   in[64], out[6 * 64 + 2], ref[6 * 64 + 2], *end;
    size_t    n, pos, i, k, rn;
    uint64_t  x;

    static const uint8_t  special[] = {
        0x00, 0x01, 0x08, 0x09, 0x0a, 0x0d, 0x1f, 0x20, '!', '"', '#',
        '[', '\\', ']', 0x7f, 0x80, 0xc3, 0xff
    };

    for (n = 0; n <= 40; n++) {
        for (pos = 0; pos < n; pos++) {
            for (k = 0; k < sizeof(special); k++) {
                for (i = 0; i < n; i++) {
                    in[i] = (uint8_t) ('a' + i % 26);
                }

                in[pos] = special[k];

                end = pg_json_label_write(out, in, n);
                rn = ref_label_write(ref, in, n);

                assert_true((size_t) (end - out) <= PG_JSON_LABEL_MAX(n));
                assert_int_equal(end - out, rn);
                assert_memory_equal(out, ref, rn);
            }
        }
    }

    x = 0x9e3779b97f4a7c15ULL;

    for (i = 0; i < 100000; i++) {
        n = i % 64;

        for (k = 0; k < n; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;

            /* mostly printable, some of everything */
            in[k] = (x & 0x300) ? (uint8_t) (0x20 + x % 95) : (uint8_t) x;
        }

        end = pg_json_label_write(out, in, n);
        rn = ref_label_write(ref, in, n);

        assert_true((size_t) (end - out) <= PG_JSON_LABEL_MAX(n));
        assert_int_equal(end - out, rn);
        assert_memory_equal(out, ref, rn);
    }

    /* the worst case: 6 bytes each */
    memset(in, 0x01, 64);
    end = pg_json_label_write(out, in, 64);
    assert_int_equal(end - out, PG_JSON_LABEL_MAX(64));
}


static void
test_buffer(void **state)
{
    arena_t         a = ARENA;
    pg_allocator_t  alloc = { arena_alloc, &a };
    pg_json_buf_t   b;
    size_t          i;
    char            expect[64];

    /* growth by doubling keeps the content */
    pg_json_init(&b, alloc);

    for (i = 0; i < 10000; i++) {
        pg_json_timestamp(&b, (int64_t) i);
        pg_json_literal(&b, ",");
    }

    assert_false(b.failed);
    assert_true(b.cap >= b.len && b.cap < 2 * b.len + 256);
    assert_memory_equal(b.data, "0,0.001,0.002,", 14);
    snprintf(expect, sizeof(expect), "9.999,");
    assert_memory_equal(b.data + b.len - 6, expect, 6);
    arena_free(&a);

    /* allocation failure sticks and drops further writes */
    a.left = 2;
    pg_json_init(&b, alloc);

    for (i = 0; i < 1000; i++) {
        pg_json_literal(&b, "0123456789");
    }

    assert_true(b.failed);
    assert_true(b.len <= 512);
    assert_null(pg_json_reserve(&b, 1));
    arena_free(&a);
}


/* ------------------------------------------------------------------ */


static void
assert_time(const char *s, int64_t expect)
{
    int64_t  ms;

    if (pg_parse_time((const uint8_t *) s, strlen(s), &ms) != 0) {
        fail_msg("\"%s\" not parsed", s);
    }

    if (ms != expect) {
        fail_msg("\"%s\": %lld, expected %lld", s, (long long) ms,
                 (long long) expect);
    }
}


static void
assert_no_time(const char *s)
{
    int64_t  ms;

    if (pg_parse_time((const uint8_t *) s, strlen(s), &ms) == 0) {
        fail_msg("\"%s\" parsed as %lld", s, (long long) ms);
    }
}


static void
test_parse_time(void **state)
{
    /* Unix seconds, fractions rounded to ms as Prometheus does */
    assert_time("1632980302", INT64_C(1632980302000));
    assert_time("1632980302.123", INT64_C(1632980302123));
    assert_time("1632980302.4444", INT64_C(1632980302444));
    assert_time("1632980302.1235", INT64_C(1632980302124));
    assert_time("1632980302.0005", INT64_C(1632980302000));
    assert_time("1632980302.9995", INT64_C(1632980303000));
    assert_time("0.0015", 2);
    assert_time("0.0025", 3);
    assert_time("-1.5", -1500);
    assert_time("-0.0005", -1);
    assert_time("-0.0015", -2);
    assert_time("+10", 10000);
    assert_time(".5", 500);
    assert_time("5.", 5000);
    assert_time("1e3", 1000000);
    assert_time("1.5e-400", 0);

    /* Go's ParseFloat syntax: hex with p exponent, underscores */
    assert_time("0x1p4", 16000);
    assert_time("0x1.8p1", 3000);
    assert_time("1_0.5", 10500);
    assert_time("1_000e0_1", 10000000);
    assert_time("0x_1p0", 1000);

    /*
     * What Go makes of inf, NaN and values beyond int64 seconds on amd64
     * (int64(float) is INT64_MIN there; time.Unix and FromTime wrap)
     */
    assert_time("inf", -INT64_C(9223372036855));
    assert_time("-Infinity", -INT64_C(9223372036855));
    assert_time("NaN", -INT64_C(9223372036855));
    assert_time("1e19", 0);
    assert_time("-1e19", 0);
    assert_time("1.7e308", 0);
    assert_time("9.2e15", INT64_C(9200000000000000000));
    assert_time("-9.3e15", INT64_C(9146744073709551616));

    /* RFC 3339 as Go 1.19 parses it */
    assert_time("2021-09-30T05:38:22Z", INT64_C(1632980302000));
    assert_time("2021-09-30T05:38:22.123456789Z", INT64_C(1632980302123));
    assert_time("2021-09-30T05:38:22.9999999Z", INT64_C(1632980302999));
    assert_time("2021-09-30T05:38:22,5Z", INT64_C(1632980302500));
    assert_time("2021-09-30T05:38:22+02:00", INT64_C(1632973102000));
    assert_time("2021-09-30T05:38:22.5-01:30", INT64_C(1632985702500));
    assert_time("2021-09-30T5:38:22Z", INT64_C(1632980302000));
    assert_time("2021-09-30T05:38:22+99:99", INT64_C(1632617962000));
    assert_time("0001-01-01T00:00:00Z", -INT64_C(62135596800000));
    assert_time("0000-01-01T00:00:00Z", -INT64_C(62167219200000));
    assert_time("2000-02-29T23:59:59.999Z", INT64_C(951868799999));
    assert_time("9999-12-31T23:59:59.999999999Z", INT64_C(253402300799999));
    assert_time("1969-12-31T23:59:59.9995Z", -1);
    assert_time("1900-03-01T00:00:00Z", -INT64_C(2203891200000));

    /* Prometheus' own bounds, which Go's parser cannot read */
    assert_time("-292273086-05-16T16:47:06Z", PG_TIME_MIN_MS);
    assert_time("292277025-08-18T07:12:54.999999999Z", PG_TIME_MAX_MS);

    assert_no_time("");
    assert_no_time("x");
    assert_no_time(" 10");
    assert_no_time("10 ");
    assert_no_time("1e");
    assert_no_time("1e400");
    assert_no_time("0x10");
    assert_no_time("0x");
    assert_no_time("1__0");
    assert_no_time("_1");
    assert_no_time("1_");
    assert_no_time("1e_1");
    assert_no_time("+nan");
    assert_no_time("infin");
    assert_no_time("1.2.3");
    /* 3.5's Go takes more than 9 fraction digits and drops the rest */
    assert_time("2021-09-30T05:38:22.1234567891Z", INT64_C(1632980302123));
    assert_time("2021-09-30T05:38:22.9999999999999Z", INT64_C(1632980302999));
    assert_no_time("2021-02-29T05:38:22Z");
    assert_no_time("1900-02-29T00:00:00Z");
    assert_no_time("2021-13-01T00:00:00Z");
    assert_no_time("2021-00-01T00:00:00Z");
    assert_no_time("2021-01-00T00:00:00Z");
    assert_no_time("2021-09-30T24:00:00Z");
    assert_no_time("2021-09-30T05:60:00Z");
    assert_no_time("2021-09-30T05:38:60Z");
    assert_no_time("2021-09-30t05:38:22Z");
    assert_no_time("2021-09-30T05:38:22z");
    assert_no_time("2021-09-30T05:38:22");
    assert_no_time("2021-09-30T05:38Z");
    assert_no_time("2021-09-30T05:38:22.Z");
    assert_no_time("2021-09-30T05:38:22+0200");
    assert_no_time("2021-09-30T05:38:22+02:00 ");
    assert_no_time("+2021-09-30T05:38:22Z");
    assert_no_time("-021-09-30T05:38:22Z");
    assert_no_time("21-09-30T05:38:22Z");
}


/* ------------------------------------------------------------------ */


#define ERR_LEN  4096


static pg_time_rc_e
params(arena_t *a, const char *args, const char *body, pg_query_params_t *qp,
    char *err)
{
    pg_allocator_t  alloc = { arena_alloc, a };

    return pg_parse_query_params((const uint8_t *) args, strlen(args),
                                 (const uint8_t *) body, strlen(body),
                                 &alloc, qp, err, ERR_LEN);
}


static void
test_query_params(void **state)
{
    arena_t             a = ARENA;
    pg_allocator_t      alloc = { arena_alloc, &a };
    pg_query_params_t   qp;
    pg_json_buf_t       b;
    char                err[ERR_LEN];
    pg_time_rc_e        rc;
    size_t              i;

    /* Prometheus 3.5: the answers to these query strings */
    for (i = 0; i < sizeof(param_vectors) / sizeof(param_vectors[0]); i++) {
        rc = params(&a, param_vectors[i].args, "", &qp, err);

        if (param_vectors[i].status == 200) {
            if (rc != PG_TIME_OK) {
                fail_msg("%s: %s", param_vectors[i].args, err);
            }

            continue;
        }

        assert_int_equal(rc, PG_TIME_BAD_REQUEST);

        pg_json_init(&b, alloc);
        pg_json_error(&b, "bad_data", (const uint8_t *) err, strlen(err));
        assert_buf(&b, param_vectors[i].body);
    }

    /* no query string, no body (as the glue may pass them) */
    assert_int_equal(pg_parse_query_params(NULL, 0, NULL, 0, &alloc, &qp, err,
                                           ERR_LEN), PG_TIME_OK);
    assert_int_equal(qp.start_ms, PG_TIME_MIN_MS);
    assert_int_equal(pg_parse_query_json(NULL, 0, &alloc, &qp, err, ERR_LEN),
                     PG_TIME_BAD_REQUEST);

    /* the message is cut to the buffer, always NUL-terminated */
    assert_int_equal(pg_parse_query_params((const uint8_t *) "start=abcdef",
                                           12, NULL, 0, &alloc, &qp, err, 20),
                     PG_TIME_BAD_REQUEST);
    assert_string_equal(err, "invalid parameter \"");

    /* defaults, decoding, the first value wins */
    assert_int_equal(params(&a, "", "", &qp, err), PG_TIME_OK);
    assert_false(qp.has_query || qp.has_start || qp.has_end);
    assert_int_equal(qp.query.len, 0);
    assert_int_equal(qp.start_ms, PG_TIME_MIN_MS);
    assert_int_equal(qp.end_ms, PG_TIME_MAX_MS);

    assert_int_equal(params(&a, "query=%7Btestlabel11%3D%22test%22%7D+or+"
                            "up&start=1632980302&end=1632980402.5&query=x",
                            "", &qp, err), PG_TIME_OK);
    assert_true(qp.has_query && qp.has_start && qp.has_end);
    assert_int_equal(qp.query.len, strlen("{testlabel11=\"test\"} or up"));
    assert_memory_equal(qp.query.data, "{testlabel11=\"test\"} or up",
                        qp.query.len);
    assert_int_equal(qp.start_ms, INT64_C(1632980302000));
    assert_int_equal(qp.end_ms, INT64_C(1632980402500));

    /* a key spelled with escapes is the key; an empty value is absent */
    assert_int_equal(params(&a, "%71uery=a&st%61rt=5&end=", "", &qp, err),
                     PG_TIME_OK);
    assert_memory_equal(qp.query.data, "a", 1);
    assert_int_equal(qp.start_ms, 5000);
    assert_false(qp.has_end);
    assert_int_equal(qp.end_ms, PG_TIME_MAX_MS);

    /* pairs with ';' or a bad escape are skipped, even other keys' */
    assert_int_equal(params(&a, "start=1;x&query=%zz&query=b&end=%4", "",
                            &qp, err), PG_TIME_OK);
    assert_false(qp.has_start);
    assert_memory_equal(qp.query.data, "b", 1);
    assert_false(qp.has_end);

    /* the body's values come before the query string's */
    assert_int_equal(params(&a, "start=abc&end=20&query=q1",
                            "query=q2&start=10", &qp, err), PG_TIME_OK);
    assert_memory_equal(qp.query.data, "q2", 2);
    assert_int_equal(qp.start_ms, 10000);
    assert_int_equal(qp.end_ms, 20000);

    /* start == end is fine, a nanosecond before is not */
    assert_int_equal(params(&a, "start=2021-09-30T05:38:22.000000001Z&end="
                            "2021-09-30T05:38:22.000000001Z", "", &qp, err),
                     PG_TIME_OK);
    assert_int_equal(params(&a, "start=2021-09-30T05:38:22.000000002Z&end="
                            "2021-09-30T05:38:22.000000001Z", "", &qp, err),
                     PG_TIME_BAD_REQUEST);
    assert_string_equal(err,
                        "end timestamp must not be before start timestamp");

    /* times beyond int64 ms wrap; an inverted range is refused */
    assert_int_equal(params(&a, "start=170000000&end=17000060e9", "", &qp,
                            err), PG_TIME_BAD_REQUEST);
    assert_string_equal(err,
                        "end timestamp must not be before start timestamp");
    assert_int_equal(params(&a, "start=-1e19", "", &qp, err), PG_TIME_OK);
    assert_int_equal(qp.start_ms, 0);

    /* out of memory */
    a.left = 0;
    assert_int_equal(params(&a, "query=abc", "", &qp, err),
                     PG_TIME_NO_MEMORY);
    a.left = 1;
    assert_int_equal(params(&a, "start=xyz", "", &qp, err),
                     PG_TIME_NO_MEMORY);
    a.left = (size_t) -1;

    arena_free(&a);
}


static pg_time_rc_e
json(arena_t *a, const char *body, size_t len, pg_query_params_t *qp,
    char *err)
{
    pg_allocator_t  alloc = { arena_alloc, a };

    return pg_parse_query_json((const uint8_t *) body,
                               len ? len : strlen(body), &alloc, qp, err,
                               ERR_LEN);
}


static void
assert_json_bad(arena_t *a, const char *body, size_t len, const char *msg)
{
    pg_query_params_t  qp;
    char               err[ERR_LEN];

    if (json(a, body, len, &qp, err) != PG_TIME_BAD_REQUEST) {
        fail_msg("accepted: %s", body);
    }

    if (strcmp(err, msg) != 0) {
        fail_msg("%s: \"%s\", expected \"%s\"", body, err, msg);
    }
}


static void
test_query_json(void **state)
{
    arena_t             a = ARENA;
    pg_query_params_t   qp;
    char                err[ERR_LEN];
    char               *deep;
    size_t              i;

    assert_int_equal(json(&a, "{\"start\":\"1632980302\",\"end\":"
                          "\"1632980402\",\"query\":"
                          "\"{testlabel11=\\\"test\\\"}\"}", 0, &qp, err),
                     PG_TIME_OK);
    assert_int_equal(qp.start_ms, INT64_C(1632980302000));
    assert_int_equal(qp.end_ms, INT64_C(1632980402000));
    assert_int_equal(qp.query.len, strlen("{testlabel11=\"test\"}"));
    assert_memory_equal(qp.query.data, "{testlabel11=\"test\"}",
                        qp.query.len);

    /* numbers, RFC 3339, null as absent, other members skipped */
    assert_int_equal(json(&a, " {\"other\":{\"a\":[1,2.5e3,true,false,null,"
                          "{\"b\":\"\\u00e9\"}]},\"start\":1632980302.123,"
                          "\"end\":\"2021-09-30T05:40:02Z\",\"query\":null,"
                          "\"x\":-0} \n", 0, &qp, err), PG_TIME_OK);
    assert_int_equal(qp.start_ms, INT64_C(1632980302123));
    assert_int_equal(qp.end_ms, INT64_C(1632980402000));
    assert_false(qp.has_query);

    /* escapes: \uXXXX, surrogate pairs, lone surrogates, invalid UTF-8 */
    assert_int_equal(json(&a, "{\"query\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\t"
                          "\\u00e9\\u2028\\ud83d\\ude00\\ud800x\\udc00\xff"
                          "\xc3\xa9\"}", 0, &qp, err), PG_TIME_OK);
    assert_int_equal(qp.query.len, 30);
    assert_memory_equal(qp.query.data, "a\"\\/\b\f\n\r\t\xc3\xa9\xe2\x80\xa8"
                        "\xf0\x9f\x98\x80\xef\xbf\xbdx\xef\xbf\xbd\xef\xbf"
                        "\xbd\xc3\xa9", 30);

    /* a repeated member replaces, as in Go */
    assert_int_equal(json(&a, "{\"start\":1,\"start\":2,\"query\":\"a\","
                          "\"query\":\"b\"}", 0, &qp, err), PG_TIME_OK);
    assert_int_equal(qp.start_ms, 2000);
    assert_memory_equal(qp.query.data, "b", 1);

    assert_int_equal(json(&a, "{}", 0, &qp, err), PG_TIME_OK);
    assert_int_equal(qp.start_ms, PG_TIME_MIN_MS);

    /* the time errors are Prometheus' */
    assert_int_equal(json(&a, "{\"start\":\"x\"}", 0, &qp, err),
                     PG_TIME_BAD_REQUEST);
    assert_string_equal(err, "invalid parameter \"start\": invalid time "
                        "value for 'start': cannot parse \"x\" to a valid "
                        "timestamp");
    assert_int_equal(json(&a, "{\"start\":5,\"end\":4}", 0, &qp, err),
                     PG_TIME_BAD_REQUEST);
    assert_string_equal(err,
                        "end timestamp must not be before start timestamp");

    /* malformed */
    assert_json_bad(&a, "", 0, "invalid JSON body: unexpected end of input "
                    "(expected an object)");
    assert_json_bad(&a, "[]", 0, "invalid JSON body: unexpected '[' at "
                    "offset 0 (expected an object)");
    assert_json_bad(&a, "{\"start\":\"1\"", 0, "invalid JSON body: "
                    "unexpected end of input (expected ',' or '}')");
    assert_json_bad(&a, "{\"start\":\"1\"}x", 0, "invalid JSON body: "
                    "unexpected 'x' at offset 13 (unexpected data after the "
                    "object)");
    assert_json_bad(&a, "{\"start\":\"1}", 0, "invalid JSON body: "
                    "unexpected end of input (unterminated string)");
    assert_json_bad(&a, "{\"start\":\"a\nb\"}", 0, "invalid JSON body: "
                    "unexpected byte 0x0a at offset 11 (control character "
                    "in string)");
    assert_json_bad(&a, "{\"start\":\"\\x\"}", 0, "invalid JSON body: "
                    "unexpected 'x' at offset 11 (invalid escape)");
    assert_json_bad(&a, "{\"start\":\"\\u12g4\"}", 0, "invalid JSON body: "
                    "unexpected 'u' at offset 11 (invalid \\u escape)");
    assert_json_bad(&a, "{start:1}", 0, "invalid JSON body: unexpected 's' "
                    "at offset 1 (expected a member name)");
    assert_json_bad(&a, "{\"start\" 1}", 0, "invalid JSON body: unexpected "
                    "'1' at offset 9 (expected ':')");
    assert_json_bad(&a, "{\"start\":01}", 0, "invalid JSON body: "
                    "unexpected '1' at offset 10 (expected ',' or '}')");
    assert_json_bad(&a, "{\"start\":1.}", 0, "invalid JSON body: "
                    "unexpected '}' at offset 11 (invalid number)");
    assert_json_bad(&a, "{\"start\":-}", 0, "invalid JSON body: "
                    "unexpected '}' at offset 10 (invalid number)");
    assert_json_bad(&a, "{\"start\":1,}", 0, "invalid JSON body: "
                    "unexpected '}' at offset 11 (expected a member name)");
    assert_json_bad(&a, "{\"x\":[1,]}", 0, "invalid JSON body: "
                    "unexpected ']' at offset 8 (invalid value)");
    assert_json_bad(&a, "{\"x\":tru}", 0, "invalid JSON body: "
                    "unexpected 't' at offset 5 (invalid value)");
    assert_json_bad(&a, "{\"x\":\"\\q\"}", 0, "invalid JSON body: "
                    "unexpected 'q' at offset 7 (invalid escape)");
    assert_json_bad(&a, "{\"start\":true}", 0, "invalid parameter "
                    "\"start\": must be a string or a number");
    assert_json_bad(&a, "{\"query\":[\"a\"]}", 0, "invalid parameter "
                    "\"query\": must be a string or a number");
    assert_json_bad(&a, "{\"a\":1}\0", 8, "invalid JSON body: unexpected "
                    "byte 0x00 at offset 7 (unexpected data after the "
                    "object)");

    /* nesting is bounded */
    deep = malloc(2 * 100 + 16);
    assert_non_null(deep);
    strcpy(deep, "{\"x\":");

    for (i = 0; i < 100; i++) {
        strcat(deep, "[");
    }

    for (i = 0; i < 100; i++) {
        strcat(deep, "]");
    }

    strcat(deep, "}");
    assert_json_bad(&a, deep, 0, "invalid JSON body: unexpected '[' at "
                    "offset 69 (nested too deeply)");

    deep[5 + 60] = '\0';
    strcat(deep, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
           "]]]]}");
    assert_int_equal(json(&a, deep, 0, &qp, err), PG_TIME_OK);
    free(deep);

    /* and the size */
    assert_int_equal(json(&a, "{}", PG_QUERY_JSON_MAX + 1, &qp, err),
                     PG_TIME_BAD_REQUEST);

    arena_free(&a);
}


/* the reader itself: walking an object, and what the flags change */
static void
test_reader(void **state)
{
    arena_t           a = ARENA;
    pg_str_t          name, v;
    pg_allocator_t    alloc = { arena_alloc, &a };
    pg_json_reader_t  r;

    static const char  doc[] = " {\"a\" : \"x\\u00e9\xff\", \"n\":-1.5e3,"
                               "\"skip\":{\"k\":[true,null,{}]}, \"z\":null}";

    pg_json_read_init(&r, (const uint8_t *) doc, sizeof(doc) - 1, &alloc, 0,
                      3);
    assert_int_equal(pg_json_read_object(&r), 0);

    assert_int_equal(pg_json_read_member(&r, &name, 1), 1);
    assert_memory_equal(name.data, "a", 2);
    assert_int_equal(pg_json_read_string(&r, &v), 0);
    assert_int_equal(v.len, 6);
    assert_memory_equal(v.data, "x\xc3\xa9\xef\xbf\xbd", 7);

    assert_int_equal(pg_json_read_member(&r, &name, 0), 1);
    assert_int_equal(pg_json_read_number(&r, &v), 0);
    assert_int_equal(v.len, 6);
    assert_memory_equal(v.data, "-1.5e3", 6);

    assert_int_equal(pg_json_read_member(&r, NULL, 0), 1);
    assert_int_equal(pg_json_read_skip(&r), 0);
    assert_int_equal(pg_json_read_member(&r, NULL, 0), 1);
    assert_int_equal(pg_json_read_null(&r), 1);
    assert_int_equal(pg_json_read_member(&r, NULL, 0), 0);
    assert_int_equal(pg_json_read_peek(&r), -1);
    assert_null(r.err);

    /* {"k":[true,...]}: true is 3 deep */
    pg_json_read_init(&r, (const uint8_t *) doc, sizeof(doc) - 1, &alloc, 0,
                      2);
    assert_int_equal(pg_json_read_object(&r), 0);
    assert_int_equal(pg_json_read_member(&r, NULL, 1), 1);
    assert_int_equal(pg_json_read_skip(&r), 0);
    assert_int_equal(pg_json_read_member(&r, NULL, 0), 1);
    assert_int_equal(pg_json_read_skip(&r), 0);
    assert_int_equal(pg_json_read_member(&r, NULL, 0), 1);
    assert_int_equal(pg_json_read_skip(&r), -1);
    assert_string_equal(r.err, "nested too deeply");
    assert_int_equal(r.err_pos - r.start, 44);

    /* raw bytes, no \u0000, numbers as the Kafka reader took them */
    pg_json_read_init(&r, (const uint8_t *) "\"\xff\\u00e9\" 01.2.3e+-",
                      19, &alloc,
                      PG_JSON_RAW_BYTES | PG_JSON_NO_NUL
                      | PG_JSON_LAX_NUMBERS, 32);
    assert_int_equal(pg_json_read_string(&r, &v), 0);
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.data, "\xff\xc3\xa9", 4);
    assert_int_equal(pg_json_read_number(&r, &v), 0);
    assert_int_equal(v.len, 9);
    assert_int_equal(pg_json_read_peek(&r), -1);

    pg_json_read_init(&r, (const uint8_t *) "[\"a\\u0000\"]", 11, &alloc,
                      PG_JSON_NO_NUL, 32);
    assert_int_equal(pg_json_read_skip(&r), -1);
    assert_string_equal(r.err, "\\u0000 in a string");

    pg_json_read_init(&r, (const uint8_t *) "01", 2, &alloc, 0, 32);
    assert_int_equal(pg_json_read_number(&r, &v), 0);
    assert_int_equal(v.len, 1);

    /* running out of memory is no error text */
    a.left = 0;
    pg_json_read_init(&r, (const uint8_t *) "{\"a\":1}", 7, &alloc, 0, 32);
    assert_int_equal(pg_json_read_object(&r), 0);
    assert_int_equal(pg_json_read_member(&r, &name, 1), -1);
    assert_true(r.nomem);
    assert_null(r.err);

    arena_free(&a);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_values_round_trip),
        cmocka_unit_test(test_values_shortest),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_labels_and_errors),
        cmocka_unit_test(test_label_strings),
        cmocka_unit_test(test_buffer),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_query_params),
        cmocka_unit_test(test_query_json),
        cmocka_unit_test(test_reader),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
