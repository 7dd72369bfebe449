// epwa hash: the IRSH-v1 router hash of a model.
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/session.hpp"

namespace epwa::cli {
namespace {

const Command kHash{"hash", "Print the IRSH-v1 router hash of a model", [](CLI::App& app) {
                      auto model = std::make_shared<ModelArgs>();
                      auto json = std::make_shared<bool>(false);
                      model->add(app);
                      app.add_flag("--json", *json,
                                   "print {\"router_hash\", \"layers\", \"experts\", \"hidden\"}");
                      return [=] {
                        model->json_stats = *json;
                        auto m = model->load();
                        const std::string h = router_hash(*m);
                        if (*json) {
                          std::cout << nlohmann::json{{"router_hash", h},
                                                      {"layers", m->config().num_layers},
                                                      {"experts", m->config().num_experts},
                                                      {"hidden", m->config().hidden_size},
                                                      {"load", model->load_json()}}
                                           .dump()
                                    << "\n";
                        } else {
                          std::cout << h << "\n";
                        }
                        return 0;
                      };
                    }};

}  // namespace
}  // namespace epwa::cli
