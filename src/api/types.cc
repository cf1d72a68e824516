#include "api/types.h"

#include <array>
#include <cstdio>

namespace kos::api {
namespace {

using namespace std::chrono;

// "YYYY-MM-DDTHH:MM:SS" of the whole second containing t (floor, so times before the
// epoch format correctly too).
std::string format_seconds(sys_seconds t) {
  const sys_days day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

// Reads exactly n decimal digits at s[pos]; -1 if any is not a digit.
int digits(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) return -1;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

struct Parsed {
  sys_seconds whole;
  nanoseconds fraction;  // [0, 1s)
};

// RFC 3339 "date-time", strictly: uppercase T and Z, no leap second. Seconds and the
// fraction stay apart because int64 nanoseconds cannot hold years past 2262.
Result<Parsed> parse_rfc3339(std::string_view s) {
  auto bad = [&](std::string_view why) {
    return fail(Errc::kInvalid, "invalid RFC 3339 time \"" + std::string(s.substr(0, 64)) +
                                    "\": " + std::string(why));
  };
  // 2006-01-02T15:04:05
  // 0123456789012345678
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') {
    return bad("want the form 2006-01-02T15:04:05Z");
  }
  const int y = digits(s, 0, 4), mo = digits(s, 5, 2), d = digits(s, 8, 2);
  const int h = digits(s, 11, 2), mi = digits(s, 14, 2), sec = digits(s, 17, 2);
  if (y < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || sec < 0) return bad("not a number");
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return bad("no such date");
  if (h > 23 || mi > 59 || sec > 59) return bad("time of day out of range");

  std::size_t pos = 19;
  nanoseconds frac{0};
  if (s[pos] == '.') {
    ++pos;
    std::int64_t n = 0;
    std::size_t count = 0;
    for (; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++count) {
      if (count == 9) return bad("more than 9 fractional digits");
      n = n * 10 + (s[pos] - '0');
    }
    if (count == 0) return bad("empty fraction");
    for (; count < 9; ++count) n *= 10;
    frac = nanoseconds{n};
  }
  minutes offset{0};
  const std::string_view zone = s.substr(pos);
  if (zone == "Z") {
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
    const int oh = digits(zone, 1, 2), om = digits(zone, 4, 2);
    if (oh < 0 || om < 0 || oh > 23 || om > 59) return bad("bad zone offset");
    offset = hours{oh} + minutes{om};
    if (zone[0] == '-') offset = -offset;
  } else {
    return bad("want a zone of Z or +hh:mm");
  }
  return Parsed{sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} - offset, frac};
}

constexpr std::array<KindInfo, 5> kKinds{{
    {Kind::kSubnet, "Subnet", "subnets", "subnet", "sn", true},
    {Kind::kNetworkAttachment, "NetworkAttachment", "networkattachments", "networkattachment", "na",
     true},
    {Kind::kIPLock, "IPLock", "iplocks", "iplock", "ipl", false},
    {Kind::kVpc, "Vpc", "vpcs", "vpc", "vpc", true},
    {Kind::kSecurityGroup, "SecurityGroup", "securitygroups", "securitygroup", "sg", false},
}};

}  // namespace

std::string format_time(Time t) { return format_seconds(t) + "Z"; }

std::string format_micro_time(MicroTime t) {
  const auto whole = floor<seconds>(t);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%06dZ", static_cast<int>((t - whole).count()));
  return format_seconds(whole) + frac;
}

Result<Time> parse_time(std::string_view s) {
  auto t = parse_rfc3339(s);
  if (!t) return fail(std::move(t.error()));
  return t->whole;
}

Result<MicroTime> parse_micro_time(std::string_view s) {
  auto t = parse_rfc3339(s);
  if (!t) return fail(std::move(t.error()));
  return t->whole + floor<microseconds>(t->fraction);
}

std::optional<MicroTime> ExtendedObjectMeta::write_time(std::string_view section) const {
  for (const auto& w : writes) {
    if (w.section == section) return w.server_time;
  }
  return std::nullopt;
}

void ExtendedObjectMeta::set_write(std::string_view section, MicroTime server_time) {
  std::erase_if(writes, [&](const ObjectWrite& w) { return w.section == section; });
  writes.insert(writes.begin(), ObjectWrite{std::string(section), server_time});
}

const KindInfo& kind_info(Kind kind) { return kKinds[static_cast<std::size_t>(kind)]; }

std::span<const KindInfo> all_kinds() { return kKinds; }

std::optional<Kind> kind_from_plural(std::string_view plural) {
  for (const auto& k : kKinds) {
    if (k.plural == plural) return k.kind;
  }
  return std::nullopt;
}

std::optional<Kind> kind_from_name(std::string_view name) {
  for (const auto& k : kKinds) {
    if (k.name == name) return k.kind;
  }
  return std::nullopt;
}

namespace {
template <std::size_t... I>
AnyObject make_at(std::size_t index, std::index_sequence<I...>) {
  static const std::array<AnyObject, sizeof...(I)> zero{
      AnyObject(std::in_place_index<I>)...};
  return zero.at(index);
}
}  // namespace

AnyObject make_object(Kind kind) {
  return make_at(static_cast<std::size_t>(kind),
                 std::make_index_sequence<std::variant_size_v<AnyObject>>());
}

// Every kind's entry and variant alternative sit at its Kind's index.
template <std::size_t... I>
constexpr bool kinds_in_order(std::index_sequence<I...>) {
  return ((kKinds[I].kind == static_cast<Kind>(I) &&
           std::variant_alternative_t<I, AnyObject>::kKind == static_cast<Kind>(I)) &&
          ...);
}
static_assert(std::variant_size_v<AnyObject> == kKinds.size());
static_assert(kinds_in_order(std::make_index_sequence<kKinds.size()>()));

}  // namespace kos::api
