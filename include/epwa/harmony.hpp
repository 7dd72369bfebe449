// GPT-OSS's replies in the harmony format, split into what an OpenAI chat answer carries
// (docs/SERVER.md, "GPT-OSS: harmony replies").
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/tool_calls.hpp"

namespace epwa {

// The control tokens of harmony that a reply is written with.
const std::vector<std::string>& harmony_markers();

// `text` is a reply that follows a prompt ending in "<|start|>assistant": messages, each a header
// (a channel "<|channel|>analysis|commentary|final", maybe a recipient " to=functions.NAME" before
// or after it, maybe a content type), "<|message|>", the body, then "<|end|>" and
// "<|start|>assistant" before the next message, or "<|return|>" / "<|call|>" (or nothing: stop
// tokens are not part of the text) at the end. Analysis bodies become `reasoning`, final and
// commentary bodies without a recipient `content` (each channel's messages joined by "\n"), a
// message to a recipient a call (`calls`: its name without "functions.", its body as the
// arguments) where the request has tools, else content.
//
// `done`: the whole reply. A call whose body is not JSON is then shown as text after the rest of
// the content, and a reply without any message body as it was written: never an empty answer.
// Otherwise `text` is a stream's prefix, and the result holds only what is certain: bodies so far,
// no call (it may not be finished), nothing before the first body. The fields of a longer prefix
// (and of the whole reply) extend those of a shorter one, so a stream sends their growth.
AssistantReply parse_harmony(std::string_view text, bool done, bool calls);

// Where a marker may be starting at the end of `text` (a prefix of one, written as plain text
// pieces): a stream holds the text back from there. text.size() when none.
size_t harmony_ready(std::string_view text);

}  // namespace epwa
