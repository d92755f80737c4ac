/**
 * Shell completion scripts for `meshq completion bash|zsh`: commands and subcommands from
 * the program itself, so the scripts never fall behind the CLI.
 */
import type { Command } from 'commander';

function tree(program: Command): Map<string, string[]> {
  const map = new Map<string, string[]>();
  const visible = (c: Command) => c.commands.filter((s) => s.name() !== 'help');
  map.set('', visible(program).map((c) => c.name()));
  for (const c of visible(program)) map.set(c.name(), visible(c).map((s) => s.name()));
  return map;
}

export function completionScript(shell: 'bash' | 'zsh', program: Command): string {
  const t = tree(program);
  const top = t.get('')!.join(' ');
  const cases = [...t]
    .filter(([k, subs]) => k !== '' && subs.length > 0)
    .map(([k, subs]) => `    ${k}) words="${subs.join(' ')}" ;;`)
    .join('\n');
  const bash = `# meshq completion for bash: eval "$(meshq completion bash)"
_meshq_complete() {
  local cur words
  cur="\${COMP_WORDS[COMP_CWORD]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    words="${top}"
  elif [ "$COMP_CWORD" -eq 2 ]; then
    case "\${COMP_WORDS[1]}" in
${cases}
    *) words="" ;;
    esac
  else
    words="--json --help"
  fi
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -o default -F _meshq_complete meshq
`;
  if (shell === 'bash') return bash;
  // zsh runs the bash function through bashcompinit: one script to keep right.
  return `# meshq completion for zsh: eval "$(meshq completion zsh)"
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bash}`;
}
