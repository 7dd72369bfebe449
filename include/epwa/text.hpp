// Small text helpers shared across modules.
#pragma once
#include <string>
#include <string_view>

namespace epwa {

// `s` with & < > " ' as HTML character references (&amp; &lt; &gt; &#34; &#39;, as Jinja2's
// escape filter writes them), safe in element text and quoted attributes.
std::string html_escape(std::string_view s);

// `s` without the spaces, tabs and line breaks at either end.
std::string_view trim_space(std::string_view s);

}  // namespace epwa
