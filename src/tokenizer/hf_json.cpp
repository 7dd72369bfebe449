// HF tokenizer.json: the BPE model and the normalizers, pre-tokenizers, post-processors and
// decoders that real BPE files use. Anything else is an Error naming the component.
#include "tokenizer/hf_json.hpp"

#include "epwa/error.hpp"
#include "tokenizer/common.hpp"

namespace epwa::tok {
namespace {

using json = nlohmann::json;

std::string type_of(const json& j, const std::string& name, const char* what) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error(name + ": " + what + " without a type");
  return j["type"].get<std::string>();
}

template <class T>
T get_or(const json& j, const char* key, T def) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? def : it->get<T>();
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

void parse_normalizer(const json& j, HfParsed& p, const std::string& name) {
  if (j.is_null()) return;
  const std::string t = type_of(j, name, "normalizer");
  if (t == "Sequence") {
    for (const json& k : j.at("normalizers")) parse_normalizer(k, p, name);
  } else if (t == "NFC" || t == "NFD" || t == "NFKC" || t == "NFKD") {
    const NormForm f = t == "NFC"    ? NormForm::NFC
                       : t == "NFD"  ? NormForm::NFD
                       : t == "NFKC" ? NormForm::NFKC
                                     : NormForm::NFKD;
    p.spec.normalizers.push_back({NormStep::Unicode, f, "", ""});
    if (t == "NFC") p.has_nfc = true;
  } else if (t == "Prepend") {
    const std::string a = j.at("prepend").get<std::string>();
    p.spec.normalizers.push_back({NormStep::Prepend, NormForm::NFC, a, ""});
    if (a == kMetaSpace) p.prepend_space = true;
  } else if (t == "Replace") {
    const json& pat = j.at("pattern");
    if (!pat.contains("String"))
      throw Error(name + ": normalizer Replace with a regex pattern is not supported");
    p.spec.normalizers.push_back({NormStep::Replace, NormForm::NFC,
                                  pat["String"].get<std::string>(),
                                  j.at("content").get<std::string>()});
  } else {
    throw Error(name + ": normalizer " + t + " is not supported");
  }
}

PreStep::Prepend prepend_scheme(const json& j) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    const std::string s = j["prepend_scheme"];
    return s == "first" ? PreStep::First : s == "never" ? PreStep::Never : PreStep::Always;
  }
  return get_or(j, "add_prefix_space", true) ? PreStep::Always : PreStep::Never;
}

void parse_pre(const json& j, HfParsed& p, const std::string& name) {
  if (j.is_null()) return;
  const std::string t = type_of(j, name, "pre_tokenizer");
  if (t == "Sequence") {
    for (const json& k : j.at("pretokenizers")) parse_pre(k, p, name);
  } else if (t == "ByteLevel") {
    PreStep s{PreStep::ByteLevel};
    s.add_prefix_space = get_or(j, "add_prefix_space", false);
    if (get_or(j, "use_regex", true)) {
      s.re = std::make_shared<RegexSplitter>(kGpt2Pattern);
      if (p.pre_regex.empty()) p.pre_regex = "gpt2";
    }
    p.spec.byte_level = true;
    p.spec.pre.push_back(std::move(s));
  } else if (t == "Split") {
    const json& pat = j.at("pattern");
    std::string re;
    if (pat.contains("Regex"))
      re = pat["Regex"].get<std::string>();
    else if (pat.contains("String"))
      re = regex_escape(pat["String"].get<std::string>());
    else
      throw Error(name + ": Split pre-tokenizer without a pattern");
    const std::string behavior = get_or<std::string>(j, "behavior", "Isolated");
    if (behavior != "Isolated" || get_or(j, "invert", false))
      throw Error(name + ": Split pre-tokenizer with behavior " + behavior +
                  (get_or(j, "invert", false) ? " (inverted)" : "") + " is not supported");
    PreStep s{PreStep::Split};
    s.re = std::make_shared<RegexSplitter>(re);
    p.pre_regex = re;
    p.spec.pre.push_back(std::move(s));
  } else if (t == "Metaspace") {
    PreStep s{PreStep::Metaspace};
    s.replacement = get_or<std::string>(j, "replacement", std::string(kMetaSpace));
    s.prepend = prepend_scheme(j);
    s.split = get_or(j, "split", true);
    if (s.prepend != PreStep::Never) p.prepend_space = true;
    if (s.prepend == PreStep::First) p.metaspace_first = true;
    p.spec.pre.push_back(std::move(s));
  } else {
    throw Error(name + ": pre_tokenizer " + t + " is not supported");
  }
}

int32_t special_id(const json& tp, const std::string& key, const std::string& name) {
  const json& st = tp.at("special_tokens");
  if (!st.contains(key)) throw Error(name + ": template names unknown special token " + key);
  const json& ids = st[key].at("ids");
  if (ids.size() != 1) throw Error(name + ": template token " + key + " is not one id");
  return ids[0].get<int32_t>();
}

void parse_post(const json& j, HfParsed& p, const std::string& name) {
  if (j.is_null()) return;
  const std::string t = type_of(j, name, "post_processor");
  if (t == "Sequence") {
    for (const json& k : j.at("processors")) parse_post(k, p, name);
  } else if (t == "ByteLevel") {
    // offsets only: no effect on ids
  } else if (t == "TemplateProcessing") {
    bool seen_seq = false;
    p.spec.prefix.clear();
    p.spec.suffix.clear();
    for (const json& item : j.at("single")) {
      if (item.contains("Sequence")) {
        seen_seq = true;
      } else if (item.contains("SpecialToken")) {
        const int32_t id = special_id(j, item["SpecialToken"].at("id").get<std::string>(), name);
        (seen_seq ? p.spec.suffix : p.spec.prefix).push_back(id);
      } else {
        throw Error(name + ": TemplateProcessing item not understood");
      }
    }
  } else {
    throw Error(name + ": post_processor " + t + " is not supported");
  }
}

void parse_decoder(const json& j, HfParsed& p, const std::string& name) {
  if (j.is_null()) return;
  const std::string t = type_of(j, name, "decoder");
  if (t == "Sequence") {
    for (const json& k : j.at("decoders")) parse_decoder(k, p, name);
  } else if (t == "ByteLevel") {
    p.spec.byte_level = true;
  } else if (t == "ByteFallback" || t == "Fuse") {
  } else if (t == "Replace") {
    const json& pat = j.at("pattern");
    if (!pat.contains("String") || pat["String"] != std::string(kMetaSpace) ||
        j.at("content") != " ")
      throw Error(name + ": decoder Replace other than U+2581 -> space is not supported");
    p.spec.decode_metaspace = true;
  } else if (t == "Strip") {
    if (j.at("content") != " " || get_or(j, "start", 0) > 1 || get_or(j, "stop", 0) != 0)
      throw Error(name + ": decoder Strip other than one leading space is not supported");
    p.spec.strip_leading_space = get_or(j, "start", 0) == 1;
  } else if (t == "Metaspace") {
    p.spec.decode_metaspace = true;
    p.spec.strip_leading_space = prepend_scheme(j) != PreStep::Never;
  } else {
    throw Error(name + ": decoder " + t + " is not supported");
  }
}

}  // namespace

HfParsed parse_hf_tokenizer(const json& j, const std::string& name) {
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw Error(name + ": not a tokenizer.json (no model)");
  HfParsed p;
  BpeSpec& s = p.spec;
  s.kind = "hf-bpe";
  const json& m = j["model"];
  const std::string mt = get_or<std::string>(m, "type", "BPE");
  if (mt != "BPE") throw Error(name + ": model type " + mt + " is not supported (only BPE)");
  if (!get_or<json>(m, "dropout", json()).is_null() && get_or(m, "dropout", 0.0) != 0.0)
    throw Error(name + ": BPE dropout is not supported");
  if (!get_or<std::string>(m, "continuing_subword_prefix", "").empty() ||
      !get_or<std::string>(m, "end_of_word_suffix", "").empty())
    throw Error(name + ": BPE continuing_subword_prefix/end_of_word_suffix is not supported");
  s.byte_fallback = get_or(m, "byte_fallback", false);
  s.fuse_unk = get_or(m, "fuse_unk", false);
  s.ignore_merges = get_or(m, "ignore_merges", false);
  if (!m.contains("vocab") || !m["vocab"].is_object()) throw Error(name + ": model has no vocab");

  int32_t max_id = -1;
  for (auto& [piece, id] : m["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
      throw Error(name + ": vocab entry \"" + piece + "\" has a bad id");
    max_id = std::max(max_id, id.get<int32_t>());
  }
  const json added = get_or<json>(j, "added_tokens", json::array());
  for (const json& a : added) {
    if (!a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
        a["id"].get<int64_t>() > (1 << 24) || !a.contains("content") || !a["content"].is_string())
      throw Error(name + ": malformed added token");
    max_id = std::max(max_id, a["id"].get<int32_t>());
  }
  s.pieces.assign(static_cast<size_t>(max_id + 1), "");
  s.types.assign(s.pieces.size(), TokenType::Unused);
  for (auto& [piece, id] : m["vocab"].items()) {
    s.pieces[id.get<int32_t>()] = piece;
    s.types[id.get<int32_t>()] =
        s.byte_fallback && byte_piece_value(piece) >= 0 ? TokenType::Byte : TokenType::Normal;
  }
  const json& unk = get_or<json>(m, "unk_token", json());
  if (unk.is_string()) {
    auto it = m["vocab"].find(unk.get<std::string>());
    if (it == m["vocab"].end()) throw Error(name + ": unk_token is not in the vocab");
    s.unk = it->get<int32_t>();
    s.types[s.unk] = TokenType::Unknown;
  }

  const json merges = get_or<json>(m, "merges", json::array());
  for (const json& mg : merges) {
    if (mg.is_string()) {
      const std::string str = mg.get<std::string>();
      const size_t sp = str.find(' ', 1);
      if (sp == std::string::npos) throw Error(name + ": merge \"" + str + "\" has no space");
      s.merges.emplace_back(str.substr(0, sp), str.substr(sp + 1));
    } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
      s.merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
    } else {
      throw Error(name + ": malformed merge entry");
    }
  }

  parse_normalizer(get_or<json>(j, "normalizer", json()), p, name);
  parse_pre(get_or<json>(j, "pre_tokenizer", json()), p, name);
  parse_post(get_or<json>(j, "post_processor", json()), p, name);
  parse_decoder(get_or<json>(j, "decoder", json()), p, name);

  bool plain_norm = true;  // whether normalizing an added token's text leaves it unchanged
  for (auto& n : s.normalizers) plain_norm = plain_norm && n.kind == NormStep::Unicode;
  for (const json& a : added) {
    AddedToken t;
    t.content = a["content"].get<std::string>();
    t.id = a["id"].get<int32_t>();
    t.special = get_or(a, "special", false);
    t.lstrip = get_or(a, "lstrip", false);
    t.rstrip = get_or(a, "rstrip", false);
    if (get_or(a, "single_word", false))
      throw Error(name + ": added token " + t.content + " with single_word is not supported");
    if (get_or(a, "normalized", false) && !plain_norm)
      throw Error(name + ": added token " + t.content +
                  " matched after normalization (normalized=true) is not supported");
    s.pieces[t.id] = t.content;
    s.types[t.id] = t.special ? TokenType::Control : TokenType::UserDefined;
    s.added.push_back(std::move(t));
  }
  // BOS/EOS: the template's, else the usual names.
  if (!s.prefix.empty()) s.bos = s.prefix.front();
  if (!s.suffix.empty()) s.eos = s.suffix.back();
  auto find_added = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      for (auto& t : s.added)
        if (t.content == n) return t.id;
    return -1;
  };
  if (s.bos < 0) s.bos = find_added({"<s>", "<|begin_of_text|>", "<|startoftext|>"});
  if (s.eos < 0) s.eos = find_added({"</s>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>"});
  return p;
}

void apply_tokenizer_config(HfParsed& p, const json& c) {
  auto token = [&](const char* key) -> int32_t {
    if (!c.contains(key)) return -1;
    const json& v = c[key];
    const std::string s = v.is_string()                            ? v.get<std::string>()
                          : v.is_object() && v.contains("content") ? v["content"].get<std::string>()
                                                                   : "";
    for (size_t i = 0; i < p.spec.pieces.size(); ++i)
      if (!s.empty() && p.spec.pieces[i] == s) return static_cast<int32_t>(i);
    return -1;
  };
  if (int32_t b = token("bos_token"); b >= 0) p.spec.bos = b;
  if (int32_t e = token("eos_token"); e >= 0) p.spec.eos = e;
}

}  // namespace epwa::tok
