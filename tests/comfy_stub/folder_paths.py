"""Stand-in for ComfyUI's folder_paths.py (same names, signatures and lookup rules).

The base folder is $COMFY_STUB_BASE_DIR, or a fresh temporary folder; like ComfyUI, models live
under <base>/models and images under <base>/input, <base>/output, <base>/temp.
"""

from __future__ import annotations

import atexit
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Collection

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}

if os.environ.get("COMFY_STUB_BASE_DIR"):
    base_path = os.path.abspath(os.environ["COMFY_STUB_BASE_DIR"])
else:  # a private folder for this process, removed at exit
    base_path = tempfile.mkdtemp(prefix="comfy_stub_")
    atexit.register(shutil.rmtree, base_path, True)
models_dir = os.path.join(base_path, "models")
folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions)
folder_names_and_paths["loras"] = ([os.path.join(models_dir, "loras")], supported_pt_extensions)
folder_names_and_paths["vae"] = ([os.path.join(models_dir, "vae")], supported_pt_extensions)
folder_names_and_paths["diffusers"] = ([os.path.join(models_dir, "diffusers")], ["folder"])
folder_names_and_paths["embeddings"] = ([os.path.join(models_dir, "embeddings")], supported_pt_extensions)
folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())

output_directory = os.path.join(base_path, "output")
temp_directory = os.path.join(base_path, "temp")
input_directory = os.path.join(base_path, "input")
user_directory = os.path.join(base_path, "user")
for _d in (output_directory, temp_directory, input_directory):
    os.makedirs(_d, exist_ok=True)


def map_legacy(folder_name: str) -> str:
    legacy = {"unet": "diffusion_models", "clip": "text_encoders"}
    return legacy.get(folder_name, folder_name)


def set_output_directory(output_dir: str) -> None:
    global output_directory
    output_directory = output_dir


def set_temp_directory(temp_dir: str) -> None:
    global temp_directory
    temp_directory = temp_dir


def set_input_directory(input_dir: str) -> None:
    global input_directory
    input_directory = input_dir


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def get_user_directory() -> str:
    return user_directory


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    """Keep files whose MIME major type (from the extension) is one of content_types."""
    out = []
    for file in files:
        mime, _ = mimetypes.guess_type(file, strict=False)
        if mime and mime.split("/")[0] in content_types:
            out.append(file)
    return out


def annotated_filepath(name: str) -> tuple[str, str | None]:
    if name.endswith("[output]"):
        return name[:-9], get_output_directory()
    if name.endswith("[input]"):
        return name[:-8], get_input_directory()
    if name.endswith("[temp]"):
        return name[:-7], get_temp_directory()
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else get_input_directory()
    return os.path.join(base_dir, name)


def exists_annotated_filepath(name) -> bool:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = get_input_directory()
    return os.path.exists(os.path.join(base_dir, name))


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name in folder_names_and_paths:
        paths, _exts = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    folder_name = map_legacy(folder_name)
    return folder_names_and_paths[folder_name][0][:]


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    if not os.path.isdir(directory):
        return [], {}
    excluded = excluded_dir_names or []
    result: list[str] = []
    dirs = {directory: os.path.getmtime(directory)}
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        for file_name in filenames:
            result.append(os.path.relpath(os.path.join(dirpath, file_name), directory))
        for d in subdirs:
            path = os.path.join(dirpath, d)
            dirs[path] = os.path.getmtime(path)
    return result, dirs


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def get_full_path(folder_name: str, filename: str) -> str | None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for x in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(x, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_filename_list(folder_name: str) -> list[str]:
    """Files under every path of the folder, relative, sorted, filtered by its extensions.

    (ComfyUI caches this list by folder mtimes; the stand-in always rescans.)
    """
    folder_name = map_legacy(folder_name)
    paths, extensions = folder_names_and_paths[folder_name]
    found: set[str] = set()
    for x in paths:
        files, _ = recursive_search(x, excluded_dir_names=[".git"])
        found.update(filter_files_extensions(files, extensions))
    return sorted(found)


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    """(full_output_folder, filename, counter, subfolder, filename_prefix) like ComfyUI.

    Refuses prefixes that leave output_dir; the counter continues after existing files.
    (ComfyUI also expands %year% and similar variables; the shipped workflows use none.)
    """
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    os.makedirs(full_output_folder, exist_ok=True)
    counters = []
    for existing in os.listdir(full_output_folder):
        if existing.startswith(filename + "_"):
            head = existing[len(filename) + 1:].split("_")[0]
            if head.isdigit():
                counters.append(int(head))
    counter = max(counters) + 1 if counters else 1
    return full_output_folder, filename, counter, subfolder, filename_prefix
