import re


def extract_prompt(chosen_text, rejected_text):
    split = re.compile(r"^(.*\n\nAssistant:)(.*)$", re.DOTALL)  # greedy .* → the LAST tag
    mc, mr = split.match(chosen_text), split.match(rejected_text)
    if not (mc and mr):
        raise ValueError("no assistant turn")
    if mc.group(1) != mr.group(1):
        raise ValueError("the prompts are not the same")
    return mc.group(1), mc.group(2), mr.group(2)
