package qemu

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Keys are named as in os-autoinst's send_key: "ret", "esc", "spc",
// "ctrl-alt-delete", "alt-f2", a single character such as "a", "A" or "|".
// A combination joins names with "-" and presses them in order, releasing
// them in reverse. QEMU's own qcode names ("bracket_left", "kp_enter", …)
// work too. Characters map to keys of a US keyboard, the only layout
// os-autoinst supports either.

// keyAliases are os-autoinst key names that differ from QEMU's qcodes.
var keyAliases = map[string]string{
	"altgr": "alt_r",
	"caps":  "caps_lock",
	"meta":  "meta_l",
	"super": "meta_l",
	"win":   "meta_l",
}

// namedQCodes are the qcodes accepted by name besides letters, digits and
// f1–f12 (see QKeyCode in QEMU's qapi/ui.json).
var namedQCodes = map[string]bool{
	"esc": true, "ret": true, "tab": true, "backspace": true, "spc": true,
	"insert": true, "delete": true, "home": true, "end": true, "pgup": true, "pgdn": true,
	"up": true, "down": true, "left": true, "right": true,
	"shift": true, "shift_r": true, "ctrl": true, "ctrl_r": true, "alt": true, "alt_r": true,
	"meta_l": true, "meta_r": true, "menu": true,
	"caps_lock": true, "num_lock": true, "scroll_lock": true, "sysrq": true, "print": true, "pause": true,
	"minus": true, "equal": true, "bracket_left": true, "bracket_right": true, "backslash": true,
	"semicolon": true, "apostrophe": true, "grave_accent": true, "comma": true, "dot": true,
	"slash": true, "less": true,
	"kp_0": true, "kp_1": true, "kp_2": true, "kp_3": true, "kp_4": true,
	"kp_5": true, "kp_6": true, "kp_7": true, "kp_8": true, "kp_9": true,
	"kp_add": true, "kp_subtract": true, "kp_multiply": true, "kp_divide": true,
	"kp_enter": true, "kp_decimal": true,
}

// charKeys says which key, with or without shift, types each character
// that is not a letter or digit.
var charKeys = map[rune]string{
	' ': "spc", '\n': "ret", '\t': "tab",
	'-': "minus", '=': "equal", '[': "bracket_left", ']': "bracket_right",
	'\\': "backslash", ';': "semicolon", '\'': "apostrophe", '`': "grave_accent",
	',': "comma", '.': "dot", '/': "slash",

	'~': "shift-grave_accent", '!': "shift-1", '@': "shift-2", '#': "shift-3",
	'$': "shift-4", '%': "shift-5", '^': "shift-6", '&': "shift-7", '*': "shift-8",
	'(': "shift-9", ')': "shift-0", '_': "shift-minus", '+': "shift-equal",
	'{': "shift-bracket_left", '}': "shift-bracket_right", '|': "shift-backslash",
	':': "shift-semicolon", '"': "shift-apostrophe",
	'<': "shift-comma", '>': "shift-dot", '?': "shift-slash",
}

// keyForChar is the key name that types r, e.g. "a", "shift-a", "shift-4".
func keyForChar(r rune) (string, bool) {
	switch {
	case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		return string(r), true
	case r >= 'A' && r <= 'Z':
		return "shift-" + string(r-'A'+'a'), true
	}
	k, ok := charKeys[r]
	return k, ok
}

// keysForString is the key to send for each character of s, checked
// completely before anything is typed.
func keysForString(s string) ([]string, error) {
	keys := make([]string, 0, len(s))
	for i, r := range s {
		k, ok := keyForChar(r)
		if !ok {
			return nil, fmt.Errorf("no key types %q (byte %d of the string; only a US keyboard layout is known)", r, i)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// qcodes turns a key name or combination into the QEMU qcodes to press,
// in order.
func qcodes(key string) ([]string, error) {
	if key == "" {
		return nil, fmt.Errorf("empty key name")
	}
	// A lone character, including "-", is that character's key.
	if utf8.RuneCountInString(key) == 1 {
		r, _ := utf8.DecodeRuneInString(key)
		if k, ok := keyForChar(r); ok {
			if k == key { // a letter or digit: a qcode itself
				return []string{k}, nil
			}
			return qcodes(k)
		}
	}
	var codes []string
	for _, part := range strings.Split(key, "-") {
		code, err := qcodePart(part)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		codes = append(codes, code...)
	}
	return codes, nil
}

// qcodePart is one name of a combination; a single character may need
// shift ("ctrl-A" is ctrl, shift, a).
func qcodePart(name string) ([]string, error) {
	if name == "" {
		return nil, fmt.Errorf("empty name in combination")
	}
	if utf8.RuneCountInString(name) == 1 {
		r, _ := utf8.DecodeRuneInString(name)
		k, ok := keyForChar(r)
		if !ok {
			return nil, fmt.Errorf("no key types %q", r)
		}
		if k == name {
			return []string{k}, nil
		}
		// Shifted or named, e.g. "shift-a" or "bracket_left": none of
		// these contain a character that recurses again.
		return qcodes(k)
	}
	if alias, ok := keyAliases[name]; ok {
		return []string{alias}, nil
	}
	if namedQCodes[name] || isFunctionKey(name) {
		return []string{name}, nil
	}
	return nil, fmt.Errorf("unknown key name %q", name)
}

// isFunctionKey is true for f1 to f12.
func isFunctionKey(name string) bool {
	if len(name) < 2 || name[0] != 'f' {
		return false
	}
	switch name[1:] {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12":
		return true
	}
	return false
}
