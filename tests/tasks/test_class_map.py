import json

import pytest

from tasks.class_map import map_folders, normalise
from zaqbench.errors import UserError


def test_wordnet_ids_and_class_names_map_to_imagenet_indices(tmp_path):
    folders = ["n01440764", "goldfish", "Great_White_Shark", "n15075141"]
    assert map_folders(folders, "imagenet", 1000, tmp_path) == {
        "n01440764": 0, "goldfish": 1, "Great_White_Shark": 2, "n15075141": 999}


def test_unmappable_folders_are_named(tmp_path):
    with pytest.raises(UserError, match=r"2 of 3 class folders .*cats, dogs"):
        map_folders(["n01440764", "dogs", "cats"], "imagenet", 1000, tmp_path)


def test_without_a_map_the_folder_count_must_equal_num_classes(tmp_path):
    assert map_folders(["b", "a"], None, 2, tmp_path) == {"a": 0, "b": 1}
    with pytest.raises(UserError, match="16 class folders but the model has 1000 classes.*class_map"):
        map_folders([f"n{i:08d}" for i in range(16)], None, 1000, tmp_path)
    with pytest.raises(UserError, match="no class folders"):
        map_folders([], None, 10, tmp_path)


def test_mapping_files(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_text("n00000001 red thing\nblue_thing\nn00000003\n")
    assert map_folders(["red_thing", "blue thing", "n00000003", "n00000001"], str(txt), 3, tmp_path) == {
        "red_thing": 0, "blue thing": 1, "n00000003": 2, "n00000001": 0}
    js = tmp_path / "classes.json"
    js.write_text(json.dumps({"a": 7, "b": 3}))
    assert map_folders(["a", "b"], str(js), 10, tmp_path) == {"a": 7, "b": 3}
    with pytest.raises(UserError, match="outside the model's 5 classes"):
        map_folders(["a", "b"], str(js), 5, tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        map_folders(["a"], str(tmp_path / "nope.txt"), 5, tmp_path)


def test_normalise():
    assert normalise(" Great_White-shark ") == "great white shark"
