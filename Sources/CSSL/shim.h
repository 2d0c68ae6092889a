// libssl for TLS to upstream model servers. Macros Swift cannot call are wrapped here.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

static inline long playground_ssl_set_sni(SSL *s, const char *host) { return SSL_set_tlsext_host_name(s, host); }
static inline long playground_ctx_min_tls12(SSL_CTX *c) { return SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION); }
