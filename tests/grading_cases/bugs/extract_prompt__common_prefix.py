# caught by: multi-turn, responses that start alike
def extract_prompt(chosen_text, rejected_text):
    if "\n\nAssistant:" not in chosen_text:
        raise ValueError("no Assistant tag")
    n = 0
    while n < min(len(chosen_text), len(rejected_text)) and chosen_text[n] == rejected_text[n]:
        n += 1  # the first differing CHARACTER: " I think blue" vs " I think red" puts " I think " in the prompt
    return chosen_text[:n], chosen_text[n:], rejected_text[n:]
