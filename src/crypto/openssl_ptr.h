// unique_ptr owners for OpenSSL objects: the one place that pairs each type with its free function.
// OpenSslPtr<T, Free> also serves libssl types (transport/tls.h names SslCtxPtr and SslPtr with it),
// so this header needs no libssl.
//
// Thread-safety: as for unique_ptr.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

namespace pororoca::crypto {

// Calls `Free` on a non-null pointer (unique_ptr never calls its deleter with null).
template <auto Free>
struct OpenSslFree {
  template <class T>
  void operator()(T* p) const noexcept {
    Free(p);
  }
};
template <class T, auto Free>
using OpenSslPtr = std::unique_ptr<T, OpenSslFree<Free>>;

using BioPtr = OpenSslPtr<BIO, BIO_free>;
using MdCtxPtr = OpenSslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using X509Ptr = OpenSslPtr<X509, X509_free>;
using X509ReqPtr = OpenSslPtr<X509_REQ, X509_REQ_free>;
using X509ExtPtr = OpenSslPtr<X509_EXTENSION, X509_EXTENSION_free>;
using BnPtr = OpenSslPtr<BIGNUM, BN_free>;

}  // namespace pororoca::crypto
