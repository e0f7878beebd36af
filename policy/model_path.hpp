// Finding a model by name: a path that exists is used as is; otherwise the name is looked up in the
// experiment file's folder, in each folder of $GRM_MODEL_PATH (colon-separated), then in ../shared/models
// (beside the working directory and beside the source tree). The error lists every place it looked.
#pragma once

#include <string>

namespace grm {

std::string resolve_model_path(const std::string& name, const std::string& config_dir = "");
// Copies tokenizer.json / tokenizer.model / tokenizer_config.json / special_tokens_map.json /
// generation_config.json when present, so a saved model directory is self-contained.
void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

}  // namespace grm
