"""Stand-in for A1111's scripts/xyz_grid.py: the AxisOption classes and the `axis_options` list.

A1111 loads it with `script_loading.load_module`, so its module is named "xyz_grid.py"; extensions
find it through `modules.scripts.scripts_data`.
"""

from modules import scripts


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {x}"


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


def do_nothing(p, x, xs):
    pass


axis_options = [AxisOption("Nothing", str, do_nothing)]


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"
