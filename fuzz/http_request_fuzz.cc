// HTTP requests as the API server reads them: Beast's parser with the server's limits,
// then what the request pipeline reads from a request before anything else (its URL,
// verb and resource; its bearer token), and the protobuf review bodies kubectl sends.
#include <cstdint>
#include <string_view>

#include <boost/beast/http.hpp>

#include "apiserver/authentication.h"
#include "apiserver/request_info.h"
#include "apiserver/review_protobuf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace bhttp = boost::beast::http;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)kos::apiserver::decode_review_protobuf(in);
  (void)kos::apiserver::TokenFileAuthenticator::parse(std::string(in), "fuzz");
  bhttp::request_parser<bhttp::string_body> p;
  p.body_limit(3 * 1024 * 1024);
  p.header_limit(64 * 1024);
  p.eager(true);
  boost::beast::error_code ec;
  p.put(boost::asio::buffer(in.data(), in.size()), ec);
  if (ec || !p.is_done()) return 0;
  auto req = p.release();
  if (auto ri = kos::apiserver::resolve_request(req)) {
    (void)ri->query.flag("watch");
  }
  return 0;
}
