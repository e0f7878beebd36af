// The `grm` command line: one function per subcommand, each binding its own options struct
// (defaults on every field) to a CLI11 subcommand whose callback does the work. main.cpp only wires
// them together. Library code throws grm::Error; main catches once, prints, exits non-zero.
#pragma once

#include <string>

#include "rm/scorer.hpp"

namespace CLI {
class App;
}

namespace grm {

void add_generate_command(CLI::App& app);       // policy: sampling from a causal LM
void add_tokenize_command(CLI::App& app);       // policy: ids and pieces for a text, or --decode
void add_chat_template_command(CLI::App& app);  // policy: a conversation rendered by a chat template
void add_train_rm_command(CLI::App& app);       // rm: train a reward model (under mpirun: data-parallel)
void add_eval_rm_command(CLI::App& app);        // rm: accuracy on a preference file
void add_plan_command(CLI::App& app);           // rm: memory per rank of a train-rm stage, before it runs
void add_score_command(CLI::App& app);          // rm: rewards for a JSONL of texts
void add_serve_command(CLI::App& app);          // rm: HTTP reward server
void add_bon_command(CLI::App& app);            // bon: Best-of-N curves
void add_ppo_command(CLI::App& app);            // ppo: PPO against a proxy, gold-evaluated
void add_run_command(CLI::App& app);            // pipeline: experiment YAML -> stage DAG -> report
void add_world_command(CLI::App& app);          // pipeline: the default story world (stage)
void add_label_command(CLI::App& app);          // pipeline: gold-RM labelling (stage)
void add_status_command(CLI::App& app);         // pipeline: DAG state of a run directory
void add_report_command(CLI::App& app);         // pipeline: rebuild a run's report

// How `serve: true` scorers start `grm serve` (rm/scorer.hpp): `exe serve --model DIR --port P
// --max-batch B`, with exe this program (main registers it) or the grm binary under test.
ServedRmCommand served_rm_command(const std::string& exe);

}  // namespace grm
