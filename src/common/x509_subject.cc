#include "common/x509_subject.h"

#include <openssl/crypto.h>

namespace kos {

X509Subject x509_subject(X509* cert) {
  X509Subject s;
  X509_NAME* name = X509_get_subject_name(cert);
  for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
    X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    const int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    unsigned char* utf8 = nullptr;
    const int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
    if (n < 0) continue;
    std::string v(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
    OPENSSL_free(utf8);
    if (nid == NID_commonName) s.common_name = std::move(v);
    else if (nid == NID_organizationName) s.organizations.push_back(std::move(v));
  }
  return s;
}

}  // namespace kos
