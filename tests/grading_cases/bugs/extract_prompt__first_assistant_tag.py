# caught by: multi-turn, responses that start alike
def extract_prompt(chosen_text, rejected_text):
    tag = "\n\nAssistant:"
    cut_c, cut_r = chosen_text.find(tag), rejected_text.find(tag)  # the FIRST tag: multi-turn prompts are cut short
    if cut_c < 0 or cut_r < 0:
        raise ValueError("no Assistant tag")
    prompt = chosen_text[: cut_c + len(tag)]
    if prompt != rejected_text[: cut_r + len(tag)]:
        raise ValueError("different prompts")
    return prompt, chosen_text[len(prompt):], rejected_text[len(prompt):]
