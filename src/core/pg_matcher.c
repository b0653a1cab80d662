/*
 * Label matchers.  Regular expressions are accepted exactly when Go's
 * regexp/syntax (as Prometheus 3.5 links it) accepts RE with Perl|DotNL
 * flags and "^(?s:RE)$", with Go's error text, which quotes RE.  The parse
 * tree is then written out as a PCRE2 pattern that means the same thing:
 * every construct is spelled explicitly (\x{..}, explicit ranges, \A and
 * \z) so that nothing depends on how PCRE2 reads the same characters.
 */

#define PCRE2_CODE_UNIT_WIDTH  8

#include <pcre2.h>
#include <stdio.h>

#include "pg_matcher.h"
#include "pg_utf8.h"


#define PG_RUNE_MAX        0x10ffff
#define PG_RUNE_ERROR      0xfffd

/* Go: maxSize = 128 << 20 / instSize */
#define PG_RE_MAX_SIZE     ((128 << 20) / 40)

/*
 * DFA workspace, in ints: some 680 states.  PCRE2's DFA keeps a state per
 * way through the pattern, and for nested quantifiers their number grows
 * with the subject; the cap keeps the work per byte bounded, and a pattern
 * that needs more goes to pcre2_match() and its limits.
 */
#define PG_RE_WORKSPACE       2048
#define PG_RE_WORKSPACE_MAX   16384


/* Go's parse flags that change what a construct means */
#define PG_RE_FOLD         0x01        /* (?i) */
#define PG_RE_MULTILINE    0x02        /* (?m): not OneLine */
#define PG_RE_DOTNL        0x04        /* (?s) */
#define PG_RE_UNGREEDY     0x08        /* (?U) */


typedef enum {
    PG_RE_EMPTY = 0,
    PG_RE_LIT,
    PG_RE_CLASS,
    PG_RE_ANY,
    PG_RE_ASSERT,
    PG_RE_FLAGS,
    PG_RE_GROUP,
    PG_RE_CONCAT,
    PG_RE_ALT,
    PG_RE_STAR,
    PG_RE_PLUS,
    PG_RE_QUEST,
    PG_RE_REPEAT
} pg_re_type_e;


typedef struct pg_re_node_s  pg_re_node_t;

struct pg_re_node_s {
    pg_re_type_e        type;
    unsigned            flags;       /* parse flags in force */
    int                 capture;     /* GROUP: (...) rather than (?:...) */
    int                 min;         /* REPEAT */
    int                 max;         /* REPEAT, -1: unbounded */
    uint32_t            rune;        /* LIT */
    const char         *text;        /* CLASS, ASSERT, FLAGS: PCRE2 text */
    size_t              len;
    pg_re_node_t       *child;       /* first child */
    pg_re_node_t       *last;        /* last child */
    pg_re_node_t       *next;        /* next sibling */
};


typedef struct {
    const uint8_t      *whole;       /* the pattern being parsed */
    const uint8_t      *end;
    pg_allocator_t     *alloc;
    unsigned            flags;
    unsigned            depth;
    int                 nomem;
    const char         *code;        /* Go's ErrorCode on failure */
    const uint8_t      *expr;        /* and the text it quotes */
    size_t              expr_len;
} pg_re_parser_t;


/* a growing set of code point ranges, for one character class */
typedef struct {
    uint32_t           *r;           /* lo, hi pairs */
    size_t              n;           /* pairs */
    size_t              cap;
    char               *props;       /* "\p{..}" items, PCRE2 syntax */
    size_t              props_len;
    size_t              props_cap;
} pg_re_class_t;


/* a matcher's state changes as it matches: one at a time */
/*
 * A regular expression's last answers by value: label values repeat (a
 * query meets the same job, le or instance on many series) and an answer
 * depends on the value alone.  Direct-mapped, for values shorter than
 * PG_RE_CACHE_LEN bytes.  A regexp on a label of many values (a path, a
 * metric name over many metrics) misses nearly always: once the first
 * PG_RE_CACHE_TRIAL lookups found fewer than one answer in
 * PG_RE_CACHE_RATIO, it goes without.
 */
#define PG_RE_CACHE           32        /* entries, a power of two */
#define PG_RE_CACHE_LEN       58
#define PG_RE_CACHE_TRIAL     256
#define PG_RE_CACHE_RATIO     4

typedef struct {
    uint32_t                hash;
    uint8_t                 len;      /* of the value + 1; 0: unused */
    uint8_t                 match;
    uint8_t                 value[PG_RE_CACHE_LEN];
} pg_re_cached_t;


struct pg_regex_s {
    pg_str_t                literals; /* set: "a|b|c" matched by equality */
    pg_re_cached_t         *cache;    /* PG_RE_CACHE entries, or NULL */
    uint32_t                lookups;
    uint32_t                found;
    pcre2_code             *code;
    pcre2_match_data       *match_data;
    pcre2_match_context    *match_ctx;
    int                    *workspace;
    size_t                  wscount;
    uint8_t                *scratch;  /* a non-UTF-8 subject, repaired */
    size_t                  scratch_size;
    pg_allocator_t          alloc;
};


#define PG_QUOTE_PROMQL  1


/* output into a caller's buffer, snprintf() style */
typedef struct {
    char                   *buf;
    size_t                  size;
    size_t                  n;
} pg_out_t;


static void pg_out(pg_out_t *o, const void *s, size_t len);
static size_t pg_out_end(pg_out_t *o);
static void pg_out_quoted(pg_out_t *o, const uint8_t *s, size_t len,
    int quote);
static void *pg_pcre2_malloc(PCRE2_SIZE size, void *data);
static void pg_pcre2_free(void *p, void *data);
static void *pg_alloc(const pg_allocator_t *a, size_t size);

static int pg_re_parse(pg_re_parser_t *p, const uint8_t *s, size_t len,
    unsigned flags, pg_re_node_t **tree);
static pg_re_node_t *pg_re_parse_alt(pg_re_parser_t *p, const uint8_t **sp,
    int top);
static int pg_re_parse_group(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat);
static int pg_re_parse_repeat(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat, const uint8_t **last_repeat);
static int pg_re_parse_escape(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat);
static int pg_re_parse_class(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat);
static int pg_re_parse_char_escape(pg_re_parser_t *p, const uint8_t **sp,
    uint32_t *r);
static int pg_re_parse_unicode_class(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_class_t *cls, int *found);
static int pg_re_valid_unicode_name(const uint8_t *name, size_t len);
static int pg_re_parse_int(const uint8_t **sp, const uint8_t *end, int *n);

static int pg_re_next_rune(pg_re_parser_t *p, const uint8_t **sp,
    uint32_t *r);
static int pg_re_check_utf8(pg_re_parser_t *p, const uint8_t *s,
    const uint8_t *end);
static int pg_re_error(pg_re_parser_t *p, const char *code,
    const uint8_t *expr, size_t len);
static pg_re_node_t *pg_re_node(pg_re_parser_t *p, pg_re_type_e type);
static void pg_re_append(pg_re_node_t *parent, pg_re_node_t *child);
static int pg_re_add_literal(pg_re_parser_t *p, pg_re_node_t *parent,
    uint32_t r);
static int pg_re_add_node(pg_re_parser_t *p, pg_re_node_t *parent,
    pg_re_type_e type, const char *text, size_t len);
static pg_re_node_t *pg_re_last_item(pg_re_node_t *concat,
    pg_re_node_t **prev);

static int pg_re_class_add(pg_re_parser_t *p, pg_re_class_t *cls,
    uint32_t lo, uint32_t hi);
static int pg_re_class_add_group(pg_re_parser_t *p, pg_re_class_t *cls,
    const uint32_t *ranges, size_t n, int negate);
static int pg_re_class_add_prop(pg_re_parser_t *p, pg_re_class_t *cls,
    int negate, const uint8_t *name, size_t len);
static int pg_re_class_node(pg_re_parser_t *p, pg_re_class_t *cls,
    int negate, pg_re_node_t *concat);

static int pg_re_repeat_valid(const pg_re_node_t *re, int n);
static int pg_re_height(const pg_re_node_t *re);
static void pg_re_height_items(const pg_re_node_t *re, pg_re_type_e op,
    int *h, int *n);
static int64_t pg_re_size(const pg_re_node_t *re);
static size_t pg_re_emit(const pg_re_node_t *re, char *buf, size_t pos);
static size_t pg_re_emit_str(char *buf, size_t pos, const char *s,
    size_t len);
static size_t pg_re_emit_rune(char *buf, size_t pos, uint32_t r);

static size_t pg_matcher_rune(const uint8_t *p, const uint8_t *end,
    uint32_t *r);
static int pg_go_isprint(uint32_t r);
static int pg_regex_compile(pg_matcher_t *m, pg_allocator_t *alloc,
    char *err, size_t err_size);
static int pg_regex_match(pg_regex_t *re, pg_str_t v);
static int pg_regex_run(pg_regex_t *re, pg_str_t v);
static uint32_t pg_regex_hash(const uint8_t *p, size_t n);
static void pg_re_format_error(pg_re_parser_t *p, char *err,
    size_t err_size);


/* Go's perl_groups.go */

static const uint32_t  pg_re_digit[] = { 0x30, 0x39 };
static const uint32_t  pg_re_space[] = { 0x9, 0xa, 0xc, 0xd, 0x20, 0x20 };
static const uint32_t  pg_re_word[] = {
    0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a
};


typedef struct {
    const char         *name;
    const uint32_t     *ranges;
    size_t              n;           /* pairs */
} pg_re_group_t;


static const uint32_t  pg_re_alnum[] = { 0x30, 0x39, 0x41, 0x5a, 0x61, 0x7a };
static const uint32_t  pg_re_alpha[] = { 0x41, 0x5a, 0x61, 0x7a };
static const uint32_t  pg_re_ascii[] = { 0x0, 0x7f };
static const uint32_t  pg_re_blank[] = { 0x9, 0x9, 0x20, 0x20 };
static const uint32_t  pg_re_cntrl[] = { 0x0, 0x1f, 0x7f, 0x7f };
static const uint32_t  pg_re_graph[] = { 0x21, 0x7e };
static const uint32_t  pg_re_lower[] = { 0x61, 0x7a };
static const uint32_t  pg_re_print[] = { 0x20, 0x7e };
static const uint32_t  pg_re_punct[] = {
    0x21, 0x2f, 0x3a, 0x40, 0x5b, 0x60, 0x7b, 0x7e
};
static const uint32_t  pg_re_pspace[] = { 0x9, 0xd, 0x20, 0x20 };
static const uint32_t  pg_re_upper[] = { 0x41, 0x5a };
static const uint32_t  pg_re_xdigit[] = {
    0x30, 0x39, 0x41, 0x46, 0x61, 0x66
};

#define pg_re_group(name, t)  { name, t, sizeof(t) / sizeof(t[0]) / 2 }

static const pg_re_group_t  pg_re_posix_groups[] = {
    pg_re_group("alnum", pg_re_alnum),
    pg_re_group("alpha", pg_re_alpha),
    pg_re_group("ascii", pg_re_ascii),
    pg_re_group("blank", pg_re_blank),
    pg_re_group("cntrl", pg_re_cntrl),
    pg_re_group("digit", pg_re_digit),
    pg_re_group("graph", pg_re_graph),
    pg_re_group("lower", pg_re_lower),
    pg_re_group("print", pg_re_print),
    pg_re_group("punct", pg_re_punct),
    pg_re_group("space", pg_re_pspace),
    pg_re_group("upper", pg_re_upper),
    pg_re_group("word", pg_re_word),
    pg_re_group("xdigit", pg_re_xdigit),
    { NULL, NULL, 0 }
};


/*
 * Go 1.19's unicode.Categories and unicode.Scripts (Unicode 13.0.0) plus
 * "Any": the only names \p{} accepts.  PCRE2 knows them all and more.
 */
static const char  *pg_re_unicode_names[] = {
    "Any",
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M",
    "Mc", "Me", "Mn", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf",
    "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
    "Adlam", "Ahom", "Anatolian_Hieroglyphs", "Arabic", "Armenian",
    "Avestan", "Balinese", "Bamum", "Bassa_Vah", "Batak", "Bengali",
    "Bhaiksuki", "Bopomofo", "Brahmi", "Braille", "Buginese", "Buhid",
    "Canadian_Aboriginal", "Carian", "Caucasian_Albanian", "Chakma", "Cham",
    "Cherokee", "Chorasmian", "Common", "Coptic", "Cuneiform", "Cypriot",
    "Cyrillic", "Deseret", "Devanagari", "Dives_Akuru", "Dogra", "Duployan",
    "Egyptian_Hieroglyphs", "Elbasan", "Elymaic", "Ethiopic", "Georgian",
    "Glagolitic", "Gothic", "Grantha", "Greek", "Gujarati", "Gunjala_Gondi",
    "Gurmukhi", "Han", "Hangul", "Hanifi_Rohingya", "Hanunoo", "Hatran",
    "Hebrew", "Hiragana", "Imperial_Aramaic", "Inherited",
    "Inscriptional_Pahlavi", "Inscriptional_Parthian", "Javanese", "Kaithi",
    "Kannada", "Katakana", "Kayah_Li", "Kharoshthi", "Khitan_Small_Script",
    "Khmer", "Khojki", "Khudawadi", "Lao", "Latin", "Lepcha", "Limbu",
    "Linear_A", "Linear_B", "Lisu", "Lycian", "Lydian", "Mahajani",
    "Makasar", "Malayalam", "Mandaic", "Manichaean", "Marchen",
    "Masaram_Gondi", "Medefaidrin", "Meetei_Mayek", "Mende_Kikakui",
    "Meroitic_Cursive", "Meroitic_Hieroglyphs", "Miao", "Modi", "Mongolian",
    "Mro", "Multani", "Myanmar", "Nabataean", "Nandinagari", "New_Tai_Lue",
    "Newa", "Nko", "Nushu", "Nyiakeng_Puachue_Hmong", "Ogham", "Ol_Chiki",
    "Old_Hungarian", "Old_Italic", "Old_North_Arabian", "Old_Permic",
    "Old_Persian", "Old_Sogdian", "Old_South_Arabian", "Old_Turkic",
    "Oriya", "Osage", "Osmanya", "Pahawh_Hmong", "Palmyrene", "Pau_Cin_Hau",
    "Phags_Pa", "Phoenician", "Psalter_Pahlavi", "Rejang", "Runic",
    "Samaritan", "Saurashtra", "Sharada", "Shavian", "Siddham",
    "SignWriting", "Sinhala", "Sogdian", "Sora_Sompeng", "Soyombo",
    "Sundanese", "Syloti_Nagri", "Syriac", "Tagalog", "Tagbanwa", "Tai_Le",
    "Tai_Tham", "Tai_Viet", "Takri", "Tamil", "Tangut", "Telugu", "Thaana",
    "Thai", "Tibetan", "Tifinagh", "Tirhuta", "Ugaritic", "Vai", "Wancho",
    "Warang_Citi", "Yezidi", "Yi", "Zanabazar_Square",
    /* Unicode 14 (PCRE2 10.40+ knows them) */
    "Cypro_Minoan", "Old_Uyghur", "Tangsa", "Toto", "Vithkuqi",
    /* Go 1.25+ categories; LC is PCRE2's L& */
    "Cn", "LC",
    /* Unicode 15 and 16: written as ranges, see pg_re_new_scripts */
    "Kawi", "Nag_Mundari", "Garay", "Gurung_Khema", "Kirat_Rai", "Ol_Onal",
    "Sunuwar", "Todhri", "Tulu_Tigalari",
    NULL
};


/*
 * Scripts newer than PCRE2 10.42's Unicode 14 tables, which Prometheus
 * 3.5 (Go's Unicode 16 tables) knows: Unicode 15's exactly as Go's
 * tables have them, Unicode 16's as their blocks (what the blocks hold
 * but the script does not is not assigned yet).
 */
static const struct {
    const char     *name;
    uint32_t        r[6];         /* lo, hi pairs; hi 0 ends */
} pg_re_new_scripts[] = {
    { "Kawi", { 0x11f00, 0x11f10, 0x11f12, 0x11f3a, 0x11f3e, 0x11f59 } },
    { "Nag_Mundari", { 0x1e4d0, 0x1e4f9 } },
    { "Garay", { 0x10d40, 0x10d8f } },
    { "Gurung_Khema", { 0x16100, 0x1613f } },
    { "Kirat_Rai", { 0x16d40, 0x16d7f } },
    { "Ol_Onal", { 0x1e5d0, 0x1e5ff } },
    { "Sunuwar", { 0x11bc0, 0x11bff } },
    { "Todhri", { 0x105c0, 0x105ff } },
    { "Tulu_Tigalari", { 0x11380, 0x113ff } },
    { NULL, { 0 } }
};


/* Go's regexp/syntax ErrorCode texts */
static const char  pg_re_err_class_range[] = "invalid character class range";
static const char  pg_re_err_escape[] = "invalid escape sequence";
static const char  pg_re_err_named[] = "invalid named capture";
static const char  pg_re_err_perl_op[] = "invalid or unsupported Perl syntax";
static const char  pg_re_err_repeat_op[] =
    "invalid nested repetition operator";
static const char  pg_re_err_repeat_size[] = "invalid repeat count";
static const char  pg_re_err_utf8[] = "invalid UTF-8";
static const char  pg_re_err_bracket[] = "missing closing ]";
static const char  pg_re_err_paren[] = "missing closing )";
static const char  pg_re_err_repeat_arg[] =
    "missing argument to repetition operator";
static const char  pg_re_err_backslash[] =
    "trailing backslash at end of expression";
static const char  pg_re_err_unexpected_paren[] = "unexpected )";
static const char  pg_re_err_nesting[] = "expression nests too deeply";
static const char  pg_re_err_internal[] = "regexp/syntax: internal error";


int
pg_matcher_init(pg_matcher_t *m, pg_match_op_e op, pg_str_t name,
    pg_str_t value, pg_allocator_t *alloc, char *err, size_t err_size)
{
    m->op = op;
    m->name = name;
    m->value = value;
    m->re = NULL;

    if (err != NULL && err_size > 0) {
        err[0] = '\0';
    }

    if (op != PG_MATCH_RE && op != PG_MATCH_NRE) {
        return PG_MATCHER_OK;
    }

    return pg_regex_compile(m, alloc, err, err_size);
}


int
pg_matcher_matches(const pg_matcher_t *m, pg_str_t v)
{
    switch (m->op) {

    case PG_MATCH_EQ:
        return pg_str_eq(m->value, v);

    case PG_MATCH_NEQ:
        return !pg_str_eq(m->value, v);

    case PG_MATCH_RE:
        return pg_regex_match(m->re, v);

    case PG_MATCH_NRE:
        return !pg_regex_match(m->re, v);
    }

    return 0;
}


/* m on the value of its label in labels, sorted; absent reads as "" */
static inline int
pg_selector_match_one(const pg_matcher_t *m, const pg_label_t *labels,
    size_t n)
{
    size_t    lo, hi, mid;
    int       rc;
    pg_str_t  v;

    v.data = NULL;
    v.len = 0;
    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = pg_str_cmp(labels[mid].name, m->name);

        if (rc == 0) {
            v = labels[mid].value;
            break;
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return pg_matcher_matches(m, v);
}


/*
 * Every matcher must accept: = and != first, the regular expressions only
 * on the series those leave (a metric name, a job, before any regexp).
 */
int
pg_selector_match(const pg_selector_t *sel, const pg_label_t *labels,
    size_t n)
{
    size_t  i;

    for (i = 0; i < sel->nmatchers; i++) {
        if (sel->matchers[i].re == NULL
            && !pg_selector_match_one(&sel->matchers[i], labels, n))
        {
            return 0;
        }
    }

    for (i = 0; i < sel->nmatchers; i++) {
        if (sel->matchers[i].re != NULL
            && !pg_selector_match_one(&sel->matchers[i], labels, n))
        {
            return 0;
        }
    }

    return 1;
}


int
pg_selector_set_match(const pg_selector_set_t *set, const pg_label_t *labels,
    size_t n)
{
    size_t  i;

    for (i = 0; i < set->nselectors; i++) {
        if (pg_selector_match(&set->selectors[i], labels, n)) {
            return 1;
        }
    }

    return 0;
}


const char *
pg_match_op_str(pg_match_op_e op)
{
    switch (op) {
    case PG_MATCH_EQ:
        return "=";
    case PG_MATCH_NEQ:
        return "!=";
    case PG_MATCH_RE:
        return "=~";
    case PG_MATCH_NRE:
        return "!~";
    }

    return "?";
}


/* [a-zA-Z_][a-zA-Z0-9_]*: what the lexer reads as one identifier */
static int
pg_legacy_name(pg_str_t n)
{
    size_t  i;
    int     c;

    if (n.len == 0) {
        return 0;
    }

    for (i = 0; i < n.len; i++) {
        c = n.data[i];

        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (i > 0 && c >= '0' && c <= '9')))
        {
            return 0;
        }
    }

    return 1;
}


size_t
pg_selector_format(const pg_selector_t *sel, char *buf, size_t size)
{
    size_t               i;
    pg_out_t             o;
    const pg_matcher_t  *m;
    const char          *op;

    o.buf = buf;
    o.size = size;
    o.n = 0;

    pg_out(&o, "{", 1);

    for (i = 0; i < sel->nmatchers; i++) {
        m = &sel->matchers[i];
        op = pg_match_op_str(m->op);

        if (i) {
            pg_out(&o, ",", 1);
        }

        /* a name PromQL cannot write bare is quoted, as 3.5 reads it */
        if (pg_legacy_name(m->name)) {
            pg_out(&o, m->name.data, m->name.len);

        } else {
            pg_out_quoted(&o, m->name.data, m->name.len, PG_QUOTE_PROMQL);
        }

        pg_out(&o, op, strlen(op));
        pg_out_quoted(&o, m->value.data, m->value.len, PG_QUOTE_PROMQL);
    }

    pg_out(&o, "}", 1);

    return pg_out_end(&o);
}


size_t
pg_go_quote(char *buf, size_t size, const uint8_t *s, size_t len, int quote)
{
    pg_out_t  o;

    o.buf = buf;
    o.size = size;
    o.n = 0;

    pg_out_quoted(&o, s, len, quote);

    return pg_out_end(&o);
}


/* appends, counting what does not fit; one byte stays for the NUL */
static void
pg_out(pg_out_t *o, const void *s, size_t len)
{
    size_t  k;

    if (o->n + 1 < o->size) {
        k = o->size - 1 - o->n;
        memcpy(o->buf + o->n, s, len < k ? len : k);
    }

    o->n += len;
}


static size_t
pg_out_end(pg_out_t *o)
{
    if (o->size > 0) {
        o->buf[o->n < o->size ? o->n : o->size - 1] = '\0';
    }

    return o->n;
}


/*
 * strconv.Quote(), or QuoteRune() with quote '\''.  PG_QUOTE_PROMQL is '"'
 * that also escapes U+FFFD, which Go prints as it is but PromQL's lexer
 * refuses in a string, so that a selector's text parses back.
 */
static void
pg_out_quoted(pg_out_t *o, const uint8_t *s, size_t len, int quote)
{
    int             n, promql;
    char            tmp[16];
    size_t          w;
    uint32_t        r;
    const uint8_t  *end;

    promql = quote == PG_QUOTE_PROMQL;
    if (promql) {
        quote = '"';
    }

    tmp[0] = (char) quote;
    pg_out(o, tmp, 1);

    end = s + len;

    for ( /* void */ ; s < end; s += w) {
        w = pg_matcher_rune(s, end, &r);

        if (w == 0) {
            n = snprintf(tmp, sizeof(tmp), "\\x%02x", s[0]);
            pg_out(o, tmp, n);
            w = 1;
            continue;
        }

        if (r == (uint32_t) quote || r == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char) r;
            pg_out(o, tmp, 2);
            continue;
        }

        if (pg_go_isprint(r) && !(promql && r == 0xfffd)) {
            pg_out(o, s, w);
            continue;
        }

        if (r >= '\a' && r <= '\r') {
            /* \a \b \t \n \v \f \r: the letters in code point order */
            tmp[0] = '\\';
            tmp[1] = "abtnvfr"[r - '\a'];
            n = 2;

        } else if (r < ' ' || r == 0x7f) {
            n = snprintf(tmp, sizeof(tmp), "\\x%02x", (unsigned) r);

        } else if (r < 0x10000) {
            n = snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned) r);

        } else {
            n = snprintf(tmp, sizeof(tmp), "\\U%08x", (unsigned) r);
        }

        pg_out(o, tmp, n);
    }

    tmp[0] = (char) quote;
    pg_out(o, tmp, 1);
}


/*
 * Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and
 * the ASCII space.  Without Unicode tables this knows the non-printing
 * ranges that occur in practice: controls, format characters, separators,
 * private use and noncharacters; an unassigned code point passes as
 * printable, which only changes how an error message quotes it.
 */
static int
pg_go_isprint(uint32_t r)
{
    size_t  i;
    static const uint32_t  np[] = {
        0x0000, 0x001f, 0x007f, 0x00a0, 0x00ad, 0x00ad, 0x0600, 0x0605,
        0x061c, 0x061c, 0x06dd, 0x06dd, 0x070f, 0x070f, 0x0890, 0x0891,
        0x08e2, 0x08e2, 0x1680, 0x1680, 0x180e, 0x180e, 0x2000, 0x200f,
        0x2028, 0x202f, 0x205f, 0x2064, 0x2066, 0x206f, 0x3000, 0x3000,
        0xd800, 0xf8ff, 0xfeff, 0xfeff, 0xfff9, 0xfffb, 0xfffe, 0xffff,
        0x110bd, 0x110bd, 0x110cd, 0x110cd, 0x13430, 0x13438,
        0x1bca0, 0x1bca3, 0x1d173, 0x1d17a, 0xe0001, 0xe0001,
        0xe0020, 0xe007f, 0xf0000, 0x10ffff
    };

    if (r >= 0x20 && r < 0x7f) {
        return 1;
    }

    for (i = 0; i < sizeof(np) / sizeof(np[0]); i += 2) {
        if (r >= np[i] && r <= np[i + 1]) {
            return 0;
        }
    }

    return (r & 0xfffe) != 0xfffe;
}


/* PCRE2 memory comes from the caller; it is released with it */

static void *
pg_pcre2_malloc(PCRE2_SIZE size, void *data)
{
    return pg_alloc(data, size);
}


static void
pg_pcre2_free(void *p, void *data)
{
    return;
}


static void *
pg_alloc(const pg_allocator_t *a, size_t size)
{
    return a->alloc(a->ctx, size ? size : 1);
}


/* no byte of regexp.QuoteMeta()'s specials but "|" */
static int
pg_re_literal_set(pg_str_t v)
{
    size_t  i;

    for (i = 0; i < v.len; i++) {
        if (strchr("\\.+*?()[]{}^$", v.data[i]) != NULL && v.data[i] != 0) {
            return 0;
        }
    }

    return 1;
}


static int
pg_regex_compile(pg_matcher_t *m, pg_allocator_t *alloc, char *err,
    size_t err_size)
{
    int                      rc, errcode;
    char                    *pattern;
    size_t                   len, n, size;
    PCRE2_SIZE               erroffset;
    pg_regex_t              *re;
    pg_re_node_t            *tree;
    pg_re_parser_t           p;
    pcre2_general_context   *gctx;
    pcre2_compile_context   *cctx;
    PCRE2_UCHAR              msg[128];

    memset(&p, 0, sizeof(pg_re_parser_t));
    p.alloc = alloc;

    /*
     * Prometheus 3.5 (optimizeAlternatingLiterals) matches a pattern made
     * of literals and "|" by string equality and never parses it, so that
     * bytes that are not UTF-8 (from \x escapes) are no error there.
     */
    if (pg_re_literal_set(m->value)) {
        re = pg_alloc(alloc, sizeof(pg_regex_t));
        if (re == NULL) {
            return PG_MATCHER_NOMEM;
        }

        memset(re, 0, sizeof(pg_regex_t));
        re->literals = m->value;
        m->re = re;

        return PG_MATCHER_OK;
    }

    /*
     * Prometheus 3.5 (NewFastRegexMatcher) parses v with Perl|DotNL and
     * reports its error, quoting v.  It then compiles "^(?s:" + v as Go
     * prints it back + ")$", which can only fail where v alone is at
     * Go's nesting or size limit: that edge is not reproduced.
     */
    rc = pg_re_parse(&p, m->value.data, m->value.len, PG_RE_DOTNL, &tree);

    if (rc != PG_MATCHER_OK) {
        if (rc == PG_MATCHER_BAD_RE) {
            pg_re_format_error(&p, err, err_size);
        }
        return rc;
    }

    /* \A( ... )\z, whatever flags the pattern sets */
    len = pg_re_emit(tree, NULL, 0) + 6;

    pattern = pg_alloc(alloc, len + 1);
    if (pattern == NULL) {
        return PG_MATCHER_NOMEM;
    }

    n = pg_re_emit_str(pattern, 0, "\\A(", 3);
    n = pg_re_emit(tree, pattern, n);
    n = pg_re_emit_str(pattern, n, ")\\z", 3);
    pattern[n] = '\0';

    re = pg_alloc(alloc, sizeof(pg_regex_t));
    if (re == NULL) {
        return PG_MATCHER_NOMEM;
    }

    memset(re, 0, sizeof(pg_regex_t));
    re->alloc = *alloc;

    gctx = pcre2_general_context_create(pg_pcre2_malloc, pg_pcre2_free,
                                        &re->alloc);
    if (gctx == NULL) {
        return PG_MATCHER_NOMEM;
    }

    cctx = pcre2_compile_context_create(gctx);
    if (cctx == NULL) {
        return PG_MATCHER_NOMEM;
    }

    pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
    pcre2_set_parens_nest_limit(cctx, PG_REGEX_MAX_NESTING + 16);

    /*
     * ALT_CIRCUMFLEX: Go's (?m)^ also matches after a final newline.
     * No UCP: Go's \b, \w, \d, \s and POSIX classes are ASCII.
     * No DOLLAR_ENDONLY: a "$" outside (?m) is written as \z already, and
     * 10.42's DFA matcher wrongly applies that option to (?m)$ as well.
     */
    re->code = pcre2_compile((PCRE2_SPTR) pattern, n,
                             PCRE2_UTF | PCRE2_NO_UTF_CHECK
                             | PCRE2_ALT_CIRCUMFLEX | PCRE2_NEVER_BACKSLASH_C
                             | PCRE2_NO_AUTO_CAPTURE,
                             &errcode, &erroffset, cctx);

    if (re->code == NULL) {
        if (errcode == PCRE2_ERROR_HEAP_FAILED) {
            return PG_MATCHER_NOMEM;
        }

        /* Go accepted it but PCRE2 cannot hold it (e.g. too large) */
        if (err != NULL && err_size > 0) {
            pcre2_get_error_message(errcode, msg, sizeof(msg));
            snprintf(err, err_size, "error parsing regexp: %s: `%.*s`",
                     (char *) msg, (int) m->value.len,
                     (const char *) m->value.data);
        }

        return PG_MATCHER_BAD_RE;
    }

    re->match_data = pcre2_match_data_create(1, gctx);
    re->match_ctx = pcre2_match_context_create(gctx);

    if (re->match_data == NULL || re->match_ctx == NULL) {
        return PG_MATCHER_NOMEM;
    }

    pcre2_set_match_limit(re->match_ctx, PG_REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(re->match_ctx, PG_REGEX_DEPTH_LIMIT);
    pcre2_set_heap_limit(re->match_ctx, PG_REGEX_HEAP_LIMIT);

    /* big patterns have more states to hold, still within a bound */
    size = 0;
    (void) pcre2_pattern_info(re->code, PCRE2_INFO_SIZE, &size);

    re->wscount = PG_RE_WORKSPACE;
    if (size * 2 > re->wscount) {
        re->wscount = size * 2 > PG_RE_WORKSPACE_MAX ? PG_RE_WORKSPACE_MAX
                                                     : size * 2;
    }

    re->workspace = pg_alloc(alloc, re->wscount * sizeof(int));
    re->cache = pg_alloc(alloc, PG_RE_CACHE * sizeof(pg_re_cached_t));

    if (re->workspace == NULL || re->cache == NULL) {
        return PG_MATCHER_NOMEM;
    }

    memset(re->cache, 0, PG_RE_CACHE * sizeof(pg_re_cached_t));

    m->re = re;

    return PG_MATCHER_OK;
}


static int
pg_regex_match(pg_regex_t *re, pg_str_t v)
{
    int              match;
    uint32_t         h;
    pg_re_cached_t  *e;

    if (re->cache == NULL || v.len >= PG_RE_CACHE_LEN) {
        return pg_regex_run(re, v);
    }

    if (++re->lookups == PG_RE_CACHE_TRIAL
        && re->found < PG_RE_CACHE_TRIAL / PG_RE_CACHE_RATIO)
    {
        re->cache = NULL;
        return pg_regex_run(re, v);
    }

    h = pg_regex_hash(v.data, v.len);
    e = &re->cache[h & (PG_RE_CACHE - 1)];

    if (e->len == v.len + 1 && e->hash == h
        && (v.len == 0 || memcmp(e->value, v.data, v.len) == 0))
    {
        re->found++;
        return e->match;
    }

    match = pg_regex_run(re, v);

    e->hash = h;
    e->len = (uint8_t) (v.len + 1);
    e->match = (uint8_t) match;

    if (v.len) {
        memcpy(e->value, v.data, v.len);
    }

    return match;
}


/* a value of up to PG_RE_CACHE_LEN bytes, 8 a step */
static uint32_t
pg_regex_hash(const uint8_t *p, size_t n)
{
    size_t    i;
    uint64_t  h, w;

    h = 0x9e3779b97f4a7c15ULL ^ n;

    for ( /* void */ ; n >= 8; n -= 8, p += 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 29;
    }

    for (w = 0, i = 0; i < n; i++) {
        w |= (uint64_t) p[i] << (8 * i);
    }

    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 31;

    return (uint32_t) h;
}


static int
pg_regex_run(pg_regex_t *re, pg_str_t v)
{
    int              rc;
    size_t           i, n, k, len;
    uint32_t         r;
    const uint8_t   *s, *end;
    static const uint8_t  empty[1] = { 0 };

    if (re->code == NULL) {
        /* a literal set: any of its "|"-separated strings, byte for byte */
        if (re->literals.len == 0) {
            return v.len == 0;
        }

        s = re->literals.data;
        end = s + re->literals.len;

        for ( ;; ) {
            const uint8_t  *bar;

            bar = memchr(s, '|', end - s);
            n = (bar ? bar : end) - s;

            if (n == v.len && (n == 0 || memcmp(s, v.data, n) == 0)) {
                return 1;
            }

            if (bar == NULL) {
                return 0;
            }

            s = bar + 1;
        }
    }

    s = v.len ? v.data : empty;
    len = v.len;

    if (!pg_utf8_valid(s, len)) {

        /*
         * Go reads each byte of a bad sequence as U+FFFD; do the same so
         * that "." and "\x{fffd}" see what they see in Prometheus.  The
         * buffer is kept for the next such value.
         */
        if (len * 3 > re->scratch_size) {
            re->scratch = pg_alloc(&re->alloc, len * 3);
            if (re->scratch == NULL) {
                re->scratch_size = 0;
                return 0;
            }
            re->scratch_size = len * 3;
        }

        end = s + len;
        n = 0;

        for (i = 0; i < len; i += k) {
            k = pg_matcher_rune(s + i, end, &r);

            if (k == 0) {
                memcpy(re->scratch + n, "\xef\xbf\xbd", 3);
                n += 3;
                k = 1;
                continue;
            }

            memcpy(re->scratch + n, s + i, k);
            n += k;
        }

        s = re->scratch;
        len = n;
    }

    rc = pcre2_dfa_match(re->code, s, len, 0, PCRE2_NO_UTF_CHECK,
                         re->match_data, re->match_ctx, re->workspace,
                         re->wscount);

    if (rc == PCRE2_ERROR_DFA_WSSIZE) {
        /* more states than the workspace holds: backtrack, with limits */
        rc = pcre2_match(re->code, s, len, 0, PCRE2_NO_UTF_CHECK,
                         re->match_data, re->match_ctx);
    }

    /* 0 means a match whose offsets did not fit; any error is no match */
    return rc >= 0;
}


static void
pg_re_format_error(pg_re_parser_t *p, char *err, size_t err_size)
{
    size_t           n, i, len;
    uint32_t         r;
    const uint8_t   *e, *end;

    if (err == NULL || err_size == 0) {
        return;
    }

    n = snprintf(err, err_size, "error parsing regexp: %s: `", p->code);
    if (n >= err_size) {
        return;
    }

    /* Go's JSON shows bytes that are not UTF-8 as U+FFFD */
    e = p->expr;
    end = e + p->expr_len;

    for (i = 0; e + i < end; i += len) {
        len = pg_matcher_rune(e + i, end, &r);

        if (len == 0) {
            if (n + 3 >= err_size) {
                break;
            }
            memcpy(err + n, "\xef\xbf\xbd", 3);
            n += 3;
            len = 1;
            continue;
        }

        if (n + len >= err_size) {
            break;
        }

        memcpy(err + n, e + i, len);
        n += len;
    }

    if (n + 1 < err_size) {
        err[n++] = '`';
    }

    err[n] = '\0';
}


/*
 * Go's regexp/syntax parser, Perl flags (as regexp.Compile uses them), as
 * a recursive descent that yields the same verdicts and error texts.
 */

static int
pg_re_parse(pg_re_parser_t *p, const uint8_t *s, size_t len,
    unsigned flags, pg_re_node_t **tree)
{
    const uint8_t  *sp;
    pg_re_node_t   *re;

    p->whole = s;
    p->end = s + len;
    p->flags = flags;
    p->depth = 0;
    p->code = NULL;

    sp = s;

    re = pg_re_parse_alt(p, &sp, 1);
    if (re == NULL) {
        return p->nomem ? PG_MATCHER_NOMEM : PG_MATCHER_BAD_RE;
    }

    /* Go checks these as it builds the tree; the verdict is the same */
    if (pg_re_height(re) > PG_REGEX_MAX_NESTING) {
        return pg_re_error(p, pg_re_err_nesting, s, len);
    }

    if (pg_re_size(re) > PG_RE_MAX_SIZE) {
        return pg_re_error(p, pg_re_err_internal, s, len);
    }

    *tree = re;

    return PG_MATCHER_OK;
}


/*
 * Parses alternatives up to the end or to an unmatched ')', which is left
 * for the caller.  Returns an ALT or CONCAT node, NULL on error.
 */
static pg_re_node_t *
pg_re_parse_alt(pg_re_parser_t *p, const uint8_t **sp, int top)
{
    int              rc;
    uint32_t         r;
    const char      *text;
    const uint8_t   *s, *last_repeat, *repeat;
    pg_re_node_t    *alt, *concat;

    alt = pg_re_node(p, PG_RE_ALT);
    concat = pg_re_node(p, PG_RE_CONCAT);
    if (alt == NULL || concat == NULL) {
        return NULL;
    }

    s = *sp;
    last_repeat = NULL;

    while (s < p->end) {
        repeat = NULL;

        switch (*s) {

        case '|':
            pg_re_append(alt, concat);
            concat = pg_re_node(p, PG_RE_CONCAT);
            if (concat == NULL) {
                return NULL;
            }
            s++;
            break;

        case ')':
            if (top) {
                pg_re_error(p, pg_re_err_unexpected_paren, p->whole,
                            p->end - p->whole);
                return NULL;
            }
            goto done;

        case '(':
            if (pg_re_parse_group(p, &s, concat) != PG_MATCHER_OK) {
                return NULL;
            }
            break;

        case '^':
        case '$':
            /* only (?i) reaches PCRE2, so say (?m) where it matters */
            if (p->flags & PG_RE_MULTILINE) {
                text = *s == '^' ? "(?m:^)" : "(?m:$)";

            } else {
                text = *s == '^' ? "\\A" : "\\z";
            }

            if (pg_re_add_node(p, concat, PG_RE_ASSERT, text, strlen(text))
                != PG_MATCHER_OK)
            {
                return NULL;
            }

            s++;
            break;

        case '.':
            if (pg_re_add_node(p, concat, PG_RE_ANY, NULL, 0)
                != PG_MATCHER_OK)
            {
                return NULL;
            }

            s++;
            break;

        case '[':
            if (pg_re_parse_class(p, &s, concat) != PG_MATCHER_OK) {
                return NULL;
            }
            break;

        case '*':
        case '+':
        case '?':
        case '{':
            repeat = s;
            rc = pg_re_parse_repeat(p, &s, concat, &last_repeat);

            if (rc == 1) {
                /* "{" that is not a repetition is a literal */
                repeat = NULL;
                if (pg_re_add_literal(p, concat, '{') != PG_MATCHER_OK) {
                    return NULL;
                }
                s++;
                break;
            }

            if (rc != PG_MATCHER_OK) {
                return NULL;
            }
            break;

        case '\\':
            if (pg_re_parse_escape(p, &s, concat) != PG_MATCHER_OK) {
                return NULL;
            }
            break;

        default:
            if (pg_re_next_rune(p, &s, &r) != PG_MATCHER_OK
                || pg_re_add_literal(p, concat, r) != PG_MATCHER_OK)
            {
                return NULL;
            }
            break;
        }

        last_repeat = repeat;
    }

    if (!top) {
        pg_re_error(p, pg_re_err_paren, p->whole, p->end - p->whole);
        return NULL;
    }

done:

    *sp = s;

    if (alt->child == NULL) {
        return concat;
    }

    pg_re_append(alt, concat);

    return alt;
}


static int
pg_re_parse_group(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat)
{
    int              sign, saw_flag, capture, named;
    unsigned         flags, saved;
    uint32_t         c;
    const char      *text;
    const uint8_t   *s, *t, *name, *e;
    pg_re_node_t    *group, *re;

    s = *sp;
    t = s + 1;
    flags = p->flags;
    capture = 1;

    if (t < p->end && *t == '?') {
        capture = 0;

        /* (?P<name>re), and (?<name>re) since Go 1.22 */
        named = (p->end - s > 4 && s[2] == 'P' && s[3] == '<') ? 4
                : (p->end - s > 3 && s[2] == '<') ? 3 : 0;

        if (named) {

            /* captures do not matter for matching */
            for (e = s; e < p->end && *e != '>'; e++) { /* void */ }

            if (e == p->end) {
                if (pg_re_check_utf8(p, s, p->end) != PG_MATCHER_OK) {
                    return PG_MATCHER_BAD_RE;
                }
                return pg_re_error(p, pg_re_err_named, s, p->end - s);
            }

            name = s + named;

            if (pg_re_check_utf8(p, name, e) != PG_MATCHER_OK) {
                return PG_MATCHER_BAD_RE;
            }

            if (e == name) {
                return pg_re_error(p, pg_re_err_named, s, e + 1 - s);
            }

            for (t = name; t < e; t++) {
                if (!(*t == '_' || (*t >= '0' && *t <= '9')
                      || ((*t | 0x20) >= 'a' && (*t | 0x20) <= 'z')))
                {
                    return pg_re_error(p, pg_re_err_named, s, e + 1 - s);
                }
            }

            capture = 1;
            t = e + 1;
            goto group;
        }

        /* flags and non-capturing groups: (?i) (?i-s:re) (?:re) */
        t = s + 2;
        sign = 1;
        saw_flag = 0;

        while (t < p->end) {
            if (pg_re_next_rune(p, &t, &c) != PG_MATCHER_OK) {
                return PG_MATCHER_BAD_RE;
            }

            switch (c) {

            case 'i':
            case 'm':
            case 's':
            case 'U':
                c = c == 'i' ? PG_RE_FOLD : c == 'm' ? PG_RE_MULTILINE
                    : c == 's' ? PG_RE_DOTNL : PG_RE_UNGREEDY;

                flags = sign > 0 ? flags | c : flags & ~c;
                saw_flag = 1;
                continue;

            case '-':
                if (sign < 0) {
                    break;
                }
                sign = -1;
                saw_flag = 0;
                continue;

            case ':':
            case ')':
                if (sign < 0 && !saw_flag) {
                    break;
                }

                if (c == ':') {
                    goto group;
                }

                /*
                 * Flags for the rest of the current group.  Only (?i)
                 * reaches PCRE2: ^, $ and . are written out per (?m) and
                 * (?s), and (?U) cannot change whether a match exists.
                 */
                if ((flags ^ p->flags) & PG_RE_FOLD) {
                    text = (flags & PG_RE_FOLD) ? "i" : "-i";

                    if (pg_re_add_node(p, concat, PG_RE_FLAGS, text,
                                       strlen(text))
                        != PG_MATCHER_OK)
                    {
                        return PG_MATCHER_NOMEM;
                    }
                }

                p->flags = flags;
                *sp = t;
                return PG_MATCHER_OK;

            default:
                break;
            }

            break;
        }

        return pg_re_error(p, pg_re_err_perl_op, s, t - s);
    }

group:

    if (++p->depth > PG_REGEX_MAX_NESTING) {
        return pg_re_error(p, pg_re_err_nesting, p->whole,
                           p->end - p->whole);
    }

    saved = p->flags;
    p->flags = flags;

    group = pg_re_node(p, PG_RE_GROUP);
    if (group == NULL) {
        return PG_MATCHER_NOMEM;
    }

    group->capture = capture;

    if ((flags ^ saved) & PG_RE_FOLD) {
        group->text = (flags & PG_RE_FOLD) ? "i" : "-i";
        group->len = strlen(group->text);
    }

    re = pg_re_parse_alt(p, &t, 0);
    if (re == NULL) {
        return p->nomem ? PG_MATCHER_NOMEM : PG_MATCHER_BAD_RE;
    }

    /* t is at the ')'; the group's flags end with it */
    t++;
    p->flags = saved;
    p->depth--;

    pg_re_append(group, re);
    pg_re_append(concat, group);

    *sp = t;

    return PG_MATCHER_OK;
}


/*
 * "*", "+", "?" or "{n,m}" applied to the last item of concat.  Returns 1
 * for a "{" that does not start a repetition.
 */
static int
pg_re_parse_repeat(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat, const uint8_t **last_repeat)
{
    int              min, max;
    pg_re_type_e     type;
    const uint8_t   *s, *t, *before;
    pg_re_node_t    *re, *sub, *prev;

    s = *sp;
    before = s;
    min = 0;
    max = 0;

    switch (*s) {
    case '*':
        type = PG_RE_STAR;
        t = s + 1;
        break;
    case '+':
        type = PG_RE_PLUS;
        t = s + 1;
        break;
    case '?':
        type = PG_RE_QUEST;
        t = s + 1;
        break;
    default:
        type = PG_RE_REPEAT;
        t = s + 1;

        if (!pg_re_parse_int(&t, p->end, &min) || t == p->end) {
            return 1;
        }

        if (*t != ',') {
            max = min;

        } else {
            t++;
            if (t == p->end) {
                return 1;
            }

            if (*t == '}') {
                max = -1;

            } else if (!pg_re_parse_int(&t, p->end, &max)) {
                return 1;

            } else if (max < 0) {
                min = -1;
            }
        }

        if (t == p->end || *t != '}') {
            return 1;
        }

        t++;

        if (min < 0 || min > PG_REGEX_MAX_REPEAT || max > PG_REGEX_MAX_REPEAT
            || (max >= 0 && min > max))
        {
            return pg_re_error(p, pg_re_err_repeat_size, before, t - before);
        }

        break;
    }

    /* Perl's lazy suffix; it does not change whether a match exists */
    if (t < p->end && *t == '?') {
        t++;
    }

    if (*last_repeat != NULL) {
        /* a** is a syntax error in Perl, and Go */
        return pg_re_error(p, pg_re_err_repeat_op, *last_repeat,
                           t - *last_repeat);
    }

    sub = pg_re_last_item(concat, &prev);
    if (sub == NULL) {
        return pg_re_error(p, pg_re_err_repeat_arg, before, t - before);
    }

    re = pg_re_node(p, type);
    if (re == NULL) {
        return PG_MATCHER_NOMEM;
    }

    re->min = min;
    re->max = max;

    /* splice re in place of sub; flag items after sub stay after it */
    re->next = sub->next;
    sub->next = NULL;
    re->child = sub;
    re->last = sub;

    if (prev == NULL) {
        concat->child = re;

    } else {
        prev->next = re;
    }

    if (concat->last == sub) {
        concat->last = re;
    }

    if (type == PG_RE_REPEAT && (min >= 2 || max >= 2)
        && !pg_re_repeat_valid(re, PG_REGEX_MAX_REPEAT))
    {
        return pg_re_error(p, pg_re_err_repeat_size, before, t - before);
    }

    *sp = t;

    return PG_MATCHER_OK;
}


static int
pg_re_parse_escape(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat)
{
    int              found, rc;
    size_t           w;
    uint32_t         r;
    const char      *text;
    const uint8_t   *s, *t, *e;
    pg_re_class_t    cls;
    const uint32_t  *g;
    size_t           gn;

    s = *sp;

    if (p->end - s >= 2) {
        switch (s[1]) {

        case 'A':
        case 'z':
        case 'b':
        case 'B':
            text = s[1] == 'A' ? "\\A" : s[1] == 'z' ? "\\z"
                   : s[1] == 'b' ? "\\b" : "\\B";
            *sp = s + 2;
            return pg_re_add_node(p, concat, PG_RE_ASSERT, text, 2);

        case 'C':
            /* any byte; not supported */
            return pg_re_error(p, pg_re_err_escape, s, 2);

        case 'Q':
            /* \Q...\E: literals up to \E or the end */
            t = s + 2;
            for (e = t; e + 1 < p->end; e++) {
                if (e[0] == '\\' && e[1] == 'E') {
                    break;
                }
            }

            if (e + 1 >= p->end) {
                e = p->end;
            }

            while (t < e) {
                w = pg_matcher_rune(t, e, &r);

                if (w == 0) {
                    /* Go reports the rest of the literal text here */
                    return pg_re_error(p, pg_re_err_utf8, t, e - t);
                }

                t += w;

                if (pg_re_add_literal(p, concat, r) != PG_MATCHER_OK) {
                    return PG_MATCHER_NOMEM;
                }
            }

            *sp = e == p->end ? e : e + 2;
            return PG_MATCHER_OK;
        }
    }

    memset(&cls, 0, sizeof(pg_re_class_t));

    if (p->end - s >= 2 && (s[1] == 'p' || s[1] == 'P')) {
        t = s;
        rc = pg_re_parse_unicode_class(p, &t, &cls, &found);
        if (rc != PG_MATCHER_OK) {
            return rc;
        }

        if (found) {
            *sp = t;
            return pg_re_class_node(p, &cls, 0, concat);
        }
    }

    if (p->end - s >= 2) {
        g = NULL;
        gn = 0;

        switch (s[1] | 0x20) {
        case 'd':
            g = pg_re_digit;
            gn = 1;
            break;
        case 's':
            g = pg_re_space;
            gn = 3;
            break;
        case 'w':
            g = pg_re_word;
            gn = 4;
            break;
        }

        if (g != NULL) {
            /* \D, \S, \W: [^...] lets PCRE2 fold before negating, as Go */
            if (pg_re_class_add_group(p, &cls, g, gn, 0) != PG_MATCHER_OK) {
                return PG_MATCHER_NOMEM;
            }

            *sp = s + 2;
            return pg_re_class_node(p, &cls, s[1] < 'a', concat);
        }
    }

    t = s;
    if (pg_re_parse_char_escape(p, &t, &r) != PG_MATCHER_OK) {
        return p->nomem ? PG_MATCHER_NOMEM : PG_MATCHER_BAD_RE;
    }

    *sp = t;

    return pg_re_add_literal(p, concat, r);
}


/* Go's parseEscape(): a single character escape */
static int
pg_re_parse_char_escape(pg_re_parser_t *p, const uint8_t **sp, uint32_t *r)
{
    int              i, nhex, x, y;
    uint32_t         c, v;
    const uint8_t   *s, *t;

    s = *sp;
    t = s + 1;

    if (t == p->end) {
        return pg_re_error(p, pg_re_err_backslash, t, 0);
    }

    if (pg_re_next_rune(p, &t, &c) != PG_MATCHER_OK) {
        return PG_MATCHER_BAD_RE;
    }

    switch (c) {

    case '1': case '2': case '3': case '4': case '5': case '6': case '7':
        /* a single non-zero digit would be a backreference */
        if (t == p->end || *t < '0' || *t > '7') {
            break;
        }
        /* fall through */

    case '0':
        v = c - '0';
        for (i = 1; i < 3; i++) {
            if (t == p->end || *t < '0' || *t > '7') {
                break;
            }
            v = v * 8 + (*t - '0');
            t++;
        }
        *r = v;
        *sp = t;
        return PG_MATCHER_OK;

    case 'x':
        if (t == p->end) {
            break;
        }

        if (pg_re_next_rune(p, &t, &c) != PG_MATCHER_OK) {
            return PG_MATCHER_BAD_RE;
        }

        if (c == '{') {
            nhex = 0;
            v = 0;

            for ( ;; ) {
                if (t == p->end) {
                    goto bad;
                }

                if (pg_re_next_rune(p, &t, &c) != PG_MATCHER_OK) {
                    return PG_MATCHER_BAD_RE;
                }

                if (c == '}') {
                    break;
                }

                x = c < 0x80 && c >= '0' && c <= '9' ? (int) c - '0'
                    : (c | 0x20) >= 'a' && (c | 0x20) <= 'f'
                      ? (int) (c | 0x20) - 'a' + 10 : -1;

                if (x < 0) {
                    goto bad;
                }

                v = v * 16 + x;
                if (v > PG_RUNE_MAX) {
                    goto bad;
                }
                nhex++;
            }

            if (nhex == 0) {
                goto bad;
            }

            *r = v;
            *sp = t;
            return PG_MATCHER_OK;
        }

        x = c >= '0' && c <= '9' ? (int) c - '0'
            : (c | 0x20) >= 'a' && (c | 0x20) <= 'f'
              ? (int) (c | 0x20) - 'a' + 10 : -1;

        if (t == p->end) {
            /* Go's nextRune("") yields RuneError without failing */
            c = PG_RUNE_ERROR;

        } else if (pg_re_next_rune(p, &t, &c) != PG_MATCHER_OK) {
            return PG_MATCHER_BAD_RE;
        }

        y = c >= '0' && c <= '9' ? (int) c - '0'
            : (c | 0x20) >= 'a' && (c | 0x20) <= 'f'
              ? (int) (c | 0x20) - 'a' + 10 : -1;

        if (x < 0 || y < 0) {
            break;
        }

        *r = x * 16 + y;
        *sp = t;
        return PG_MATCHER_OK;

    case 'a':
        *r = '\a';
        *sp = t;
        return PG_MATCHER_OK;
    case 'f':
        *r = '\f';
        *sp = t;
        return PG_MATCHER_OK;
    case 'n':
        *r = '\n';
        *sp = t;
        return PG_MATCHER_OK;
    case 'r':
        *r = '\r';
        *sp = t;
        return PG_MATCHER_OK;
    case 't':
        *r = '\t';
        *sp = t;
        return PG_MATCHER_OK;
    case 'v':
        *r = '\v';
        *sp = t;
        return PG_MATCHER_OK;

    default:
        /* escaped punctuation is itself; \q and friends are errors */
        if (c < 0x80 && !((c >= '0' && c <= '9') || ((c | 0x20) >= 'a'
                                                   && (c | 0x20) <= 'z')))
        {
            *r = c;
            *sp = t;
            return PG_MATCHER_OK;
        }
        break;
    }

bad:

    return pg_re_error(p, pg_re_err_escape, s, t - s);
}


/* \pN, \p{Name}, \PN, \P{^Name}; *found is 0 if s is none of these */
static int
pg_re_parse_unicode_class(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_class_t *cls, int *found)
{
    int              negate;
    uint32_t         c;
    const uint8_t   *s, *t, *name, *e;
    size_t           len;

    s = *sp;
    *found = 0;

    if (p->end - s < 2 || s[0] != '\\' || (s[1] != 'p' && s[1] != 'P')) {
        return PG_MATCHER_OK;
    }

    negate = s[1] == 'P';
    t = s + 2;

    /* Go: nextRune("") gives RuneError, an unknown one-letter name */
    if (t == p->end) {
        return pg_re_error(p, pg_re_err_class_range, s, 2);
    }

    if (pg_re_next_rune(p, &t, &c) != PG_MATCHER_OK) {
        return PG_MATCHER_BAD_RE;
    }

    if (c != '{') {
        name = s + 2;
        len = t - name;
        e = t;

    } else {
        for (e = s; e < p->end && *e != '}'; e++) { /* void */ }

        if (e == p->end) {
            if (pg_re_check_utf8(p, s, p->end) != PG_MATCHER_OK) {
                return PG_MATCHER_BAD_RE;
            }
            return pg_re_error(p, pg_re_err_class_range, s, p->end - s);
        }

        name = s + 3;
        len = e - name;

        if (pg_re_check_utf8(p, name, e) != PG_MATCHER_OK) {
            return PG_MATCHER_BAD_RE;
        }

        e++;
    }

    if (len && name[0] == '^') {
        negate = !negate;
        name++;
        len--;
    }

    if (!pg_re_valid_unicode_name(name, len)) {
        return pg_re_error(p, pg_re_err_class_range, s, e - s);
    }

    if (pg_re_class_add_prop(p, cls, negate, name, len) != PG_MATCHER_OK) {
        return PG_MATCHER_NOMEM;
    }

    *found = 1;
    *sp = e;

    return PG_MATCHER_OK;
}


static int
pg_re_valid_unicode_name(const uint8_t *name, size_t len)
{
    size_t  i;

    for (i = 0; pg_re_unicode_names[i] != NULL; i++) {
        if (strlen(pg_re_unicode_names[i]) == len
            && memcmp(pg_re_unicode_names[i], name, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* a character of a class, or an end of a range: an escape or a rune */
static int
pg_re_class_char(pg_re_parser_t *p, const uint8_t **sp, uint32_t *r)
{
    if (**sp == '\\') {
        return pg_re_parse_char_escape(p, sp, r);
    }

    return pg_re_next_rune(p, sp, r);
}


/* Go's parseClass() */
static int
pg_re_parse_class(pg_re_parser_t *p, const uint8_t **sp,
    pg_re_node_t *concat)
{
    int              negate, first, found, neg, rc;
    size_t           i, nlen;
    uint32_t         lo, hi;
    const uint8_t   *s, *t, *rng, *e;
    pg_re_class_t    cls;

    s = *sp;
    t = s + 1;
    negate = 0;

    memset(&cls, 0, sizeof(pg_re_class_t));

    if (t < p->end && *t == '^') {
        negate = 1;
        t++;
    }

    first = 1;

    while (t == p->end || *t != ']' || first) {
        first = 0;

        if (t == p->end) {
            return pg_re_error(p, pg_re_err_bracket, s, p->end - s);
        }

        /* [:alnum:] and friends */
        if (p->end - t > 2 && t[0] == '[' && t[1] == ':') {
            for (e = t + 2; e + 1 < p->end; e++) {
                if (e[0] == ':' && e[1] == ']') {
                    break;
                }
            }

            if (e + 1 < p->end) {
                neg = t[2] == '^';
                nlen = e - (t + 2 + neg);

                for (i = 0; pg_re_posix_groups[i].name != NULL; i++) {
                    if (strlen(pg_re_posix_groups[i].name) == nlen
                        && memcmp(pg_re_posix_groups[i].name, t + 2 + neg,
                                  nlen) == 0)
                    {
                        break;
                    }
                }

                if (pg_re_posix_groups[i].name == NULL) {
                    return pg_re_error(p, pg_re_err_class_range, t,
                                       e + 2 - t);
                }

                if (pg_re_class_add_group(p, &cls,
                                          pg_re_posix_groups[i].ranges,
                                          pg_re_posix_groups[i].n, neg)
                    != PG_MATCHER_OK)
                {
                    return PG_MATCHER_NOMEM;
                }

                t = e + 2;
                continue;
            }
        }

        rc = pg_re_parse_unicode_class(p, &t, &cls, &found);
        if (rc != PG_MATCHER_OK) {
            return rc;
        }

        if (found) {
            continue;
        }

        if (p->end - t >= 2 && t[0] == '\\'
            && ((t[1] | 0x20) == 'd' || (t[1] | 0x20) == 's'
                || (t[1] | 0x20) == 'w'))
        {
            neg = t[1] < 'a';

            switch (t[1] | 0x20) {
            case 'd':
                rc = pg_re_class_add_group(p, &cls, pg_re_digit, 1, neg);
                break;
            case 's':
                rc = pg_re_class_add_group(p, &cls, pg_re_space, 3, neg);
                break;
            default:
                rc = pg_re_class_add_group(p, &cls, pg_re_word, 4, neg);
                break;
            }

            if (rc != PG_MATCHER_OK) {
                return PG_MATCHER_NOMEM;
            }

            t += 2;
            continue;
        }

        /* a character or a range */
        rng = t;

        if (pg_re_class_char(p, &t, &lo) != PG_MATCHER_OK) {
            return PG_MATCHER_BAD_RE;
        }

        hi = lo;

        if (p->end - t >= 2 && t[0] == '-' && t[1] != ']') {
            t++;

            if (pg_re_class_char(p, &t, &hi) != PG_MATCHER_OK) {
                return PG_MATCHER_BAD_RE;
            }

            if (hi < lo) {
                return pg_re_error(p, pg_re_err_class_range, rng, t - rng);
            }
        }

        if (pg_re_class_add(p, &cls, lo, hi) != PG_MATCHER_OK) {
            return PG_MATCHER_NOMEM;
        }
    }

    *sp = t + 1;

    return pg_re_class_node(p, &cls, negate, concat);
}


/* parseInt(): decimal, no leading zeros; n = -1 if too large */
static int
pg_re_parse_int(const uint8_t **sp, const uint8_t *end, int *n)
{
    const uint8_t  *s;

    s = *sp;

    if (s == end || *s < '0' || *s > '9') {
        return 0;
    }

    if (end - s >= 2 && s[0] == '0' && s[1] >= '0' && s[1] <= '9') {
        return 0;
    }

    *n = 0;

    while (s < end && *s >= '0' && *s <= '9') {
        if (*n >= 0) {
            *n = *n >= 100000000 ? -1 : *n * 10 + (*s - '0');
        }
        s++;
    }

    *sp = s;

    return 1;
}


static int
pg_re_next_rune(pg_re_parser_t *p, const uint8_t **sp, uint32_t *r)
{
    size_t  n;

    n = pg_matcher_rune(*sp, p->end, r);

    if (n == 0) {
        /* Go quotes the rest of the pattern */
        return pg_re_error(p, pg_re_err_utf8, *sp, p->end - *sp);
    }

    *sp += n;

    return PG_MATCHER_OK;
}


/* Go's checkUTF8(): quotes the text from the bad byte to end */
static int
pg_re_check_utf8(pg_re_parser_t *p, const uint8_t *s, const uint8_t *end)
{
    uint32_t  r;
    size_t    n;

    while (s < end) {
        n = pg_matcher_rune(s, end, &r);
        if (n == 0) {
            return pg_re_error(p, pg_re_err_utf8, s, end - s);
        }
        s += n;
    }

    return PG_MATCHER_OK;
}


static int
pg_re_error(pg_re_parser_t *p, const char *code, const uint8_t *expr,
    size_t len)
{
    p->code = code;
    p->expr = expr;
    p->expr_len = len;

    return PG_MATCHER_BAD_RE;
}


static pg_re_node_t *
pg_re_node(pg_re_parser_t *p, pg_re_type_e type)
{
    pg_re_node_t  *re;

    re = pg_alloc(p->alloc, sizeof(pg_re_node_t));
    if (re == NULL) {
        p->nomem = 1;
        return NULL;
    }

    memset(re, 0, sizeof(pg_re_node_t));
    re->type = type;
    re->flags = p->flags;

    return re;
}


static void
pg_re_append(pg_re_node_t *parent, pg_re_node_t *child)
{
    if (parent->last == NULL) {
        parent->child = child;

    } else {
        parent->last->next = child;
    }

    parent->last = child;
}


/* a literal rune appended to parent */
static int
pg_re_add_literal(pg_re_parser_t *p, pg_re_node_t *parent, uint32_t r)
{
    pg_re_node_t  *re;

    re = pg_re_node(p, PG_RE_LIT);
    if (re == NULL) {
        return PG_MATCHER_NOMEM;
    }

    re->rune = r;
    pg_re_append(parent, re);

    return PG_MATCHER_OK;
}


/* a node appended to parent; text: what PCRE2 gets (ASSERT, FLAGS, CLASS) */
static int
pg_re_add_node(pg_re_parser_t *p, pg_re_node_t *parent, pg_re_type_e type,
    const char *text, size_t len)
{
    pg_re_node_t  *re;

    re = pg_re_node(p, type);
    if (re == NULL) {
        return PG_MATCHER_NOMEM;
    }

    re->text = text;
    re->len = len;
    pg_re_append(parent, re);

    return PG_MATCHER_OK;
}


/*
 * What a repetition applies to: the last item, flag settings aside (Go
 * keeps those off its stack, so "a(?i)*" repeats the "a").
 */
static pg_re_node_t *
pg_re_last_item(pg_re_node_t *concat, pg_re_node_t **prev)
{
    pg_re_node_t  *re, *p, *item, *item_prev;

    item = NULL;
    item_prev = NULL;
    p = NULL;

    for (re = concat->child; re != NULL; re = re->next) {
        if (re->type != PG_RE_FLAGS) {
            item = re;
            item_prev = p;
        }
        p = re;
    }

    *prev = item_prev;

    return item;
}


static int
pg_re_class_add(pg_re_parser_t *p, pg_re_class_t *cls, uint32_t lo,
    uint32_t hi)
{
    uint32_t  *r;

    if (cls->n == cls->cap) {
        cls->cap = cls->cap ? cls->cap * 2 : 8;

        r = pg_alloc(p->alloc, cls->cap * 2 * sizeof(uint32_t));
        if (r == NULL) {
            p->nomem = 1;
            return PG_MATCHER_NOMEM;
        }

        if (cls->n) {
            memcpy(r, cls->r, cls->n * 2 * sizeof(uint32_t));
        }

        cls->r = r;
    }

    cls->r[cls->n * 2] = lo;
    cls->r[cls->n * 2 + 1] = hi;
    cls->n++;

    return PG_MATCHER_OK;
}


/*
 * Adds an ASCII group (\d, [:alpha:], ...) or its complement.  Under (?i)
 * Go complements the case-folded group: the other case of its letters,
 * and U+212A KELVIN SIGN and U+017F LATIN SMALL LETTER LONG S, which fold
 * to k and s.  The complement is then closed under case, so PCRE2 adding
 * case variants to the class changes nothing.
 */
static int
pg_re_class_add_group(pg_re_parser_t *p, pg_re_class_t *cls,
    const uint32_t *ranges, size_t n, int negate)
{
    int       in[128], kelvin, long_s;
    size_t    i;
    uint32_t  c, lo;

    if (!negate) {
        for (i = 0; i < n; i++) {
            if (pg_re_class_add(p, cls, ranges[2 * i], ranges[2 * i + 1])
                != PG_MATCHER_OK)
            {
                return PG_MATCHER_NOMEM;
            }
        }

        return PG_MATCHER_OK;
    }

    memset(in, 0, sizeof(in));

    for (i = 0; i < n; i++) {
        for (c = ranges[2 * i]; c <= ranges[2 * i + 1]; c++) {
            in[c] = 1;
        }
    }

    kelvin = 0;
    long_s = 0;

    if (p->flags & PG_RE_FOLD) {
        for (c = 'a'; c <= 'z'; c++) {
            if (in[c] || in[c - 0x20]) {
                in[c] = 1;
                in[c - 0x20] = 1;
            }
        }

        kelvin = in['k'];
        long_s = in['s'];
    }

    for (c = 0; c < 128; c = lo) {
        for ( /* void */ ; c < 128 && in[c]; c++) { /* void */ }

        for (lo = c; lo < 128 && !in[lo]; lo++) { /* void */ }

        if (lo > c && pg_re_class_add(p, cls, c, lo - 1) != PG_MATCHER_OK) {
            return PG_MATCHER_NOMEM;
        }
    }

    /* everything above ASCII but the fold extras */
    lo = 0x80;

    if (long_s) {
        if (pg_re_class_add(p, cls, lo, 0x17e) != PG_MATCHER_OK) {
            return PG_MATCHER_NOMEM;
        }
        lo = 0x180;
    }

    if (kelvin) {
        if (pg_re_class_add(p, cls, lo, 0x2129) != PG_MATCHER_OK) {
            return PG_MATCHER_NOMEM;
        }
        lo = 0x212b;
    }

    return pg_re_class_add(p, cls, lo, PG_RUNE_MAX);
}


static int
pg_re_class_add_prop(pg_re_parser_t *p, pg_re_class_t *cls, int negate,
    const uint8_t *name, size_t len)
{
    int              rc;
    char            *props;
    size_t           need, i, k;
    uint32_t         next;
    const uint32_t  *r;

    need = cls->props_len + len + 5;

    if (need > cls->props_cap) {
        cls->props_cap = need * 2;

        props = pg_alloc(p->alloc, cls->props_cap);
        if (props == NULL) {
            p->nomem = 1;
            return PG_MATCHER_NOMEM;
        }

        if (cls->props_len) {
            memcpy(props, cls->props, cls->props_len);
        }

        cls->props = props;
    }

    /* a script PCRE2 does not know: its ranges (uncased, no folding) */
    for (i = 0; pg_re_new_scripts[i].name != NULL; i++) {
        if (strlen(pg_re_new_scripts[i].name) != len
            || memcmp(pg_re_new_scripts[i].name, name, len) != 0)
        {
            continue;
        }

        r = pg_re_new_scripts[i].r;
        next = 0;

        for (k = 0; k < 6 && r[k + 1] != 0; k += 2) {
            rc = negate ? (r[k] > next ? pg_re_class_add(p, cls, next,
                                                         r[k] - 1)
                                       : PG_MATCHER_OK)
                        : pg_re_class_add(p, cls, r[k], r[k + 1]);
            if (rc != PG_MATCHER_OK) {
                return rc;
            }
            next = r[k + 1] + 1;
        }

        if (negate) {
            return pg_re_class_add(p, cls, next, PG_RUNE_MAX);
        }

        return PG_MATCHER_OK;
    }

    /*
     * Under (?i) Go adds to a class what folds into it: for the cased
     * letter categories that is all cased letters, PCRE2's L&.  Go's
     * "Any" is every code point; PCRE2 spells it the same.  Go's LC is
     * PCRE2's L&.
     */
    if (((p->flags & PG_RE_FOLD) && len == 2 && name[0] == 'L'
         && (name[1] == 'u' || name[1] == 'l' || name[1] == 't'))
        || (len == 2 && name[0] == 'L' && name[1] == 'C'))
    {
        name = (const uint8_t *) "L&";
    }

    cls->props[cls->props_len++] = '\\';
    cls->props[cls->props_len++] = negate ? 'P' : 'p';
    cls->props[cls->props_len++] = '{';
    memcpy(cls->props + cls->props_len, name, len);
    cls->props_len += len;
    cls->props[cls->props_len++] = '}';

    return PG_MATCHER_OK;
}


/*
 * Writes the class as a PCRE2 class of \x{..} ranges and \p{..} items.
 * Surrogates are not characters in UTF-8 (Go decodes them as U+FFFD, PCRE2
 * refuses them), so ranges skip them; a class left empty matches nothing,
 * its negation anything.
 */
static int
pg_re_class_node(pg_re_parser_t *p, pg_re_class_t *cls, int negate,
    pg_re_node_t *concat)
{
    size_t         i, k, n, size;
    uint32_t       lo, hi, part[4];
    char          *buf;

    size = 32 + cls->props_len + cls->n * 2 * 24;

    buf = pg_alloc(p->alloc, size);
    if (buf == NULL) {
        p->nomem = 1;
        return PG_MATCHER_NOMEM;
    }

    n = 0;
    buf[n++] = '[';
    if (negate) {
        buf[n++] = '^';
    }

    for (i = 0; i < cls->n; i++) {
        lo = cls->r[2 * i];
        hi = cls->r[2 * i + 1];
        k = 0;

        if (lo < 0xd800) {
            part[k++] = lo;
            part[k++] = hi < 0xd800 ? hi : 0xd7ff;
        }

        if (hi > 0xdfff) {
            part[k++] = lo > 0xdfff ? lo : 0xe000;
            part[k++] = hi;
        }

        for (k = k / 2; k > 0; k--) {
            lo = part[k * 2 - 2];
            hi = part[k * 2 - 1];

            n += sprintf(buf + n, lo == hi ? "\\x{%x}" : "\\x{%x}-\\x{%x}",
                         (unsigned) lo, (unsigned) hi);
        }
    }

    if (cls->props_len) {
        memcpy(buf + n, cls->props, cls->props_len);
        n += cls->props_len;
    }

    if (n == (size_t) (negate ? 2 : 1)) {
        n = 0;
        n += sprintf(buf, negate ? "[\\x{0}-\\x{10ffff}]"
                                 : "[^\\x{0}-\\x{10ffff}]");

    } else {
        buf[n++] = ']';
    }

    return pg_re_add_node(p, concat, PG_RE_CLASS, buf, n);
}


/* Go's repeatIsValid(): nested counted repetitions stay within n copies */
static int
pg_re_repeat_valid(const pg_re_node_t *re, int n)
{
    int                  m;
    const pg_re_node_t  *sub;

    if (re->type == PG_RE_REPEAT) {
        m = re->max;

        if (m == 0) {
            return 1;
        }

        if (m < 0) {
            m = re->min;
        }

        if (m > n) {
            return 0;
        }

        if (m > 0) {
            n /= m;
        }
    }

    for (sub = re->child; sub != NULL; sub = sub->next) {
        if (!pg_re_repeat_valid(sub, n)) {
            return 0;
        }
    }

    return 1;
}


/*
 * The height of Go's tree for this parse.  Go flattens a concatenation
 * into an enclosing one, and an alternation likewise; a non-capturing
 * group is no node at all; a run of literals is one node.
 */
static int
pg_re_height(const pg_re_node_t *re)
{
    int  h, n;

    switch (re->type) {

    case PG_RE_GROUP:
        h = pg_re_height(re->child);
        return re->capture ? h + 1 : h;

    case PG_RE_CONCAT:
    case PG_RE_ALT:
        h = 0;
        n = 0;
        pg_re_height_items(re, re->type, &h, &n);
        return n == 0 ? 1 : n == 1 ? h : h + 1;

    case PG_RE_STAR:
    case PG_RE_PLUS:
    case PG_RE_QUEST:
    case PG_RE_REPEAT:
        return pg_re_height(re->child) + 1;

    default:
        return 1;
    }
}


/* the members re contributes to a flattened node of type op */
static void
pg_re_height_items(const pg_re_node_t *re, pg_re_type_e op, int *h, int *n)
{
    int                  hs, lit;
    const pg_re_node_t  *sub, *inner;

    lit = 0;

    for (sub = re->child; sub != NULL; sub = sub->next) {

        if (sub->type == PG_RE_FLAGS) {
            continue;
        }

        if (op == PG_RE_CONCAT && sub->type == PG_RE_LIT) {
            if (!lit) {
                lit = 1;
                (*n)++;
                if (*h < 1) {
                    *h = 1;
                }
            }
            continue;
        }

        lit = 0;

        inner = sub;
        if (sub->type == PG_RE_GROUP && !sub->capture) {
            inner = sub->child;
        }

        if (inner->type == op && inner != sub) {
            pg_re_height_items(inner, op, h, n);
            continue;
        }

        hs = pg_re_height(sub);
        if (hs > *h) {
            *h = hs;
        }
        (*n)++;
    }
}


/* Go's calcSize(): instructions the program would take */
static int64_t
pg_re_size(const pg_re_node_t *re)
{
    int                  n;
    int64_t              size, sub;
    const pg_re_node_t  *c;

    size = 0;

    switch (re->type) {

    case PG_RE_GROUP:
        sub = pg_re_size(re->child);
        size = re->capture ? 2 + sub : sub;
        break;

    case PG_RE_CONCAT:
    case PG_RE_ALT:
        n = 0;

        for (c = re->child; c != NULL; c = c->next) {
            if (c->type == PG_RE_FLAGS) {
                continue;
            }

            size += pg_re_size(c);
            n++;

            if (size > PG_RE_MAX_SIZE) {
                return size;
            }
        }

        if (re->type == PG_RE_ALT && n > 1) {
            size += n - 1;
        }
        break;

    case PG_RE_STAR:
        size = 2 + pg_re_size(re->child);
        break;

    case PG_RE_PLUS:
    case PG_RE_QUEST:
        size = 1 + pg_re_size(re->child);
        break;

    case PG_RE_REPEAT:
        sub = pg_re_size(re->child);

        if (re->max == -1) {
            size = re->min == 0 ? 2 + sub : 1 + (int64_t) re->min * sub;

        } else {
            size = (int64_t) re->max * sub + (re->max - re->min);
        }
        break;

    case PG_RE_LIT:
        size = 1;
        break;

    default:
        break;
    }

    return size < 1 ? 1 : size;
}


/* writes re as PCRE2 syntax at buf + pos (buf NULL: only counts) */
static size_t
pg_re_emit(const pg_re_node_t *re, char *buf, size_t pos)
{
    char                 q[32];
    const pg_re_node_t  *c;

    switch (re->type) {

    case PG_RE_EMPTY:
        return pos;

    case PG_RE_LIT:
        return pg_re_emit_rune(buf, pos, re->rune);

    case PG_RE_CLASS:
    case PG_RE_ASSERT:
        return pg_re_emit_str(buf, pos, re->text, re->len);

    case PG_RE_FLAGS:
        pos = pg_re_emit_str(buf, pos, "(?", 2);
        pos = pg_re_emit_str(buf, pos, re->text, re->len);
        return pg_re_emit_str(buf, pos, ")", 1);

    case PG_RE_ANY:
        if (re->flags & PG_RE_DOTNL) {
            return pg_re_emit_str(buf, pos, "[\\x{0}-\\x{10ffff}]", 18);
        }
        return pg_re_emit_str(buf, pos, "[^\\n]", 5);

    case PG_RE_GROUP:
        /*
         * With NO_AUTO_CAPTURE a bare "(" does not capture, and unlike
         * "(?:" it takes no room on PCRE2's small stack of option groups.
         */
        if (re->len) {
            pos = pg_re_emit_str(buf, pos, "(?", 2);
            pos = pg_re_emit_str(buf, pos, re->text, re->len);
            pos = pg_re_emit_str(buf, pos, ":", 1);

        } else {
            pos = pg_re_emit_str(buf, pos, "(", 1);
        }

        pos = pg_re_emit(re->child, buf, pos);
        return pg_re_emit_str(buf, pos, ")", 1);

    case PG_RE_CONCAT:
        for (c = re->child; c != NULL; c = c->next) {
            pos = pg_re_emit(c, buf, pos);
        }
        return pos;

    case PG_RE_ALT:
        for (c = re->child; c != NULL; c = c->next) {
            if (c != re->child) {
                pos = pg_re_emit_str(buf, pos, "|", 1);
            }
            pos = pg_re_emit(c, buf, pos);
        }
        return pos;

    default:
        break;
    }

    /* repetitions: PCRE2 repeats a single item, so group anything else */
    c = re->child;

    if (c->type == PG_RE_LIT || c->type == PG_RE_CLASS
        || c->type == PG_RE_ANY || c->type == PG_RE_GROUP)
    {
        pos = pg_re_emit(c, buf, pos);

    } else {
        pos = pg_re_emit_str(buf, pos, "(", 1);
        pos = pg_re_emit(c, buf, pos);
        pos = pg_re_emit_str(buf, pos, ")", 1);
    }

    switch (re->type) {
    case PG_RE_STAR:
        return pg_re_emit_str(buf, pos, "*", 1);
    case PG_RE_PLUS:
        return pg_re_emit_str(buf, pos, "+", 1);
    case PG_RE_QUEST:
        return pg_re_emit_str(buf, pos, "?", 1);
    default:
        break;
    }

    if (re->max == -1) {
        snprintf(q, sizeof(q), "{%d,}", re->min);

    } else if (re->max == re->min) {
        snprintf(q, sizeof(q), "{%d}", re->min);

    } else {
        snprintf(q, sizeof(q), "{%d,%d}", re->min, re->max);
    }

    return pg_re_emit_str(buf, pos, q, strlen(q));
}


static size_t
pg_re_emit_str(char *buf, size_t pos, const char *s, size_t len)
{
    if (buf != NULL) {
        memcpy(buf + pos, s, len);
    }

    return pos + len;
}


static size_t
pg_re_emit_rune(char *buf, size_t pos, uint32_t r)
{
    char  tmp[32];
    int   n;

    if (r < 0x80 && ((r >= '0' && r <= '9') || ((r | 0x20) >= 'a'
                                              && (r | 0x20) <= 'z')))
    {
        tmp[0] = (char) r;
        n = 1;

    } else if (r >= 0xd800 && r <= 0xdfff) {
        /*
         * Go's literal prefix (a string built with WriteRune) turns a
         * surrogate into U+FFFD, and that is what it then compares.
         */
        n = snprintf(tmp, sizeof(tmp), "\\x{fffd}");

    } else {
        n = snprintf(tmp, sizeof(tmp), "\\x{%x}", (unsigned) r);
    }

    return pg_re_emit_str(buf, pos, tmp, n);
}


/* one UTF-8 sequence by Go's rules; 0 if invalid, truncated or at end */
static size_t
pg_matcher_rune(const uint8_t *p, const uint8_t *end, uint32_t *r)
{
    return p < end ? pg_utf8_decode_rune(p, (size_t) (end - p), r) : 0;
}
