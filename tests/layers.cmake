cmake_minimum_required(VERSION 3.18)
# The layer check: `cmake -DROOT=<source root> -P tests/layers.cmake` reads the #include lines of every
# library source under ROOT and fails, naming file and line, on an include its folder may not make.
# This table is the one place the allowed dependencies are written; a folder may always include itself.
#
#   core             the foundation: errors, log, config binder, atomic files, text/JSONL I/O, LibTorch entry
#   cluster          processes and communication (MPI/NCCL, launchers)
#   policy/tokenizer tokenizers; outside it only its public header policy/tokenizer/tokenizer.hpp is used
#   policy           the causal LM, generation, chat templates
#   rm/serve         HTTP reward serving: nothing model-side, no LibTorch
#   rm               reward models, data, training, evaluation, scorers
#   bon, ppo         policy optimization against a proxy; neither includes the other
#   pipeline/world   the default story world's stages
#   pipeline         orchestration: experiments, sweeps, the stage DAG
#   pipeline/report  reports read from a run directory
#   bench            benchmarks (may not include pipeline/)
#   pipeline/cli     the `grm` command line: may include everything
set(folders core cluster policy/tokenizer policy rm/serve rm bon ppo pipeline/world pipeline/report
            pipeline/cli pipeline bench)
set(allowed_core "")
set(allowed_cluster core)
set(allowed_policy/tokenizer core)
set(allowed_policy core policy/tokenizer)
set(allowed_rm/serve core)
set(allowed_rm core cluster policy/tokenizer policy rm/serve)
set(allowed_bon core cluster policy/tokenizer policy rm/serve rm)
set(allowed_ppo core cluster policy/tokenizer policy rm/serve rm)
set(allowed_pipeline/world core cluster policy/tokenizer policy rm/serve rm)
set(allowed_pipeline core cluster policy/tokenizer policy rm/serve rm bon ppo pipeline/world)
set(allowed_pipeline/report core cluster policy/tokenizer policy rm/serve rm bon ppo pipeline/world pipeline)
set(allowed_bench core cluster policy/tokenizer policy rm/serve rm bon ppo)
set(allowed_pipeline/cli ${folders})
set(no_torch rm/serve)  # folders that may not include LibTorch, directly or through core/torch*.hpp

# folder_of(PATH OUT): the deepest folder of the table that PATH (relative to ROOT) lies in, or "".
function(folder_of path out)
  set(best "")
  foreach(folder IN LISTS folders)
    string(LENGTH "${folder}" n)
    string(LENGTH "${best}" n_best)
    if(path MATCHES "^${folder}/" AND n GREATER n_best)
      set(best ${folder})
    endif()
  endforeach()
  set(${out} "${best}" PARENT_SCOPE)
endfunction()

if(NOT ROOT)
  message(FATAL_ERROR "usage: cmake -DROOT=<source root> -P tests/layers.cmake")
endif()
set(errors "")
set(n_errors 0)
set(n_files 0)
file(GLOB_RECURSE sources RELATIVE ${ROOT} ${ROOT}/*.cpp ${ROOT}/*.hpp)
list(SORT sources)
foreach(source IN LISTS sources)
  folder_of(${source} from)
  if(from STREQUAL "")
    continue()  # tests/, build trees and anything outside the libraries
  endif()
  math(EXPR n_files "${n_files} + 1")
  file(STRINGS ${ROOT}/${source} lines)
  set(line_number 0)
  foreach(line IN LISTS lines)
    math(EXPR line_number "${line_number} + 1")
    set(problem "")
    if(line MATCHES "^#include \"([^\"]+)\"")
      set(target ${CMAKE_MATCH_1})
      folder_of(${target} to)
      if(to STREQUAL "")
        set(problem "${from}/ may not include ${target} (not a library folder)")
      elseif(NOT to STREQUAL from)
        if(NOT to IN_LIST allowed_${from})
          string(REPLACE ";" ", " may "${allowed_${from}}")
          set(problem "${from}/ may not include ${target} (${from}/ may include: ${may})")
        elseif(to STREQUAL "policy/tokenizer" AND NOT target STREQUAL "policy/tokenizer/tokenizer.hpp")
          set(problem "${from}/ may not include ${target}: outside policy/tokenizer/ use policy/tokenizer/tokenizer.hpp")
        endif()
      endif()
      if(problem STREQUAL "" AND from IN_LIST no_torch AND target MATCHES "^core/torch")
        set(problem "${from}/ may not include LibTorch (${target})")
      endif()
    elseif(line MATCHES "^#include <(torch|ATen|c10)/" AND from IN_LIST no_torch)
      set(problem "${from}/ may not include LibTorch (${line})")
    endif()
    if(NOT problem STREQUAL "")
      string(APPEND errors "${source}:${line_number}: ${problem}\n")
      math(EXPR n_errors "${n_errors} + 1")
    endif()
  endforeach()
endforeach()
if(n_errors GREATER 0)
  # Printed as they are (message() would re-wrap them), one line per wrong include.
  execute_process(COMMAND ${CMAKE_COMMAND} -E echo "${errors}${n_errors} wrong includes")
  message(FATAL_ERROR "${n_errors} wrong includes in ${n_files} library sources under ${ROOT}; "
                      "the allowed includes are the table in tests/layers.cmake")
endif()
message(STATUS "layers: ${n_files} library sources under ${ROOT}, every include allowed")
