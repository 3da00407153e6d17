#pragma once
// The pieces of the _core module, one function per group of bindings (module.cc calls them
// in order). Supervisor side: errors, constants, host facts, launch settings, the cell
// runner. Worker side: the worker's channel.

// Every unit sees the same type casters: a conversion (std::optional, std::function) that one
// file knows and another does not would fail only at run time, in that file's bindings.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string_view>

namespace sandbox_exec::python {

namespace py = pybind11;

void bind_errors(py::module_& m);           // bind_errors.cc
void bind_constants(py::module_& m);        // bind_constants.cc
void bind_host(py::module_& m);             // bind_host.cc
void bind_launch_settings(py::module_& m);  // bind_launch_settings.cc
void bind_cell_runner(py::module_& m);      // bind_cell_runner.cc
void bind_worker_channel(py::module_& m);   // bind_worker_channel.cc

// The bytes of a Python bytes object, without a copy (valid while the object lives).
std::string_view bytes_view(const py::bytes& b);

}  // namespace sandbox_exec::python
