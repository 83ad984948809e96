#!/bin/sh
# rvlab fault hook: installed by tests (tests/support/faults.rs) as /usr/local/sbin/NAME on a
# board, so it runs instead of /usr/bin/NAME for every command that finds NAME on the PATH.
# It stops a remote command at an exact point, so a test can inject a fault there without
# guessing with sleeps. Armed by /run/rvlab/fault/NAME holding one line "N WHEN PATTERN": the
# Nth call whose arguments match the shell pattern PATTERN (matched against " ARGS ") pauses,
# WHEN = before (the real command has not run), after (it ran; its status is kept) or a byte
# count (that many stdin bytes went through the real command, the rest waits). A pause writes
# the hook's pid to /run/rvlab/fault/paused and lasts until the test removes that file.
# Calls are counted in /run/rvlab/fault/NAME.count. Not armed: the real command, unchanged.
name=${0##*/}
dir=/run/rvlab/fault
real=
for p in "/usr/bin/$name" "/bin/$name" "/usr/sbin/$name" "/sbin/$name"; do
    if [ -x "$p" ]; then real=$p; break; fi
done
pause() {
    echo "$$" >"$dir/.paused.$$" && /bin/mv -f "$dir/.paused.$$" "$dir/paused"
    while [ -e "$dir/paused" ]; do sleep 0.02; done
}
if [ -f "$dir/$name" ] && read -r n when pattern <"$dir/$name"; then
    # shellcheck disable=SC2254
    case " $* " in
    $pattern)
        c=$(($(cat "$dir/$name.count" 2>/dev/null || echo 0) + 1))
        echo "$c" >"$dir/$name.count"
        if [ "$c" = "$n" ]; then
            case $when in
            before)
                pause
                exec "$real" "$@"
                ;;
            after)
                "$real" "$@"
                rc=$?
                pause
                exit $rc
                ;;
            *)
                { head -c "$when"; pause; cat; } | "$real" "$@"
                exit $?
                ;;
            esac
        fi
        ;;
    esac
fi
exec "$real" "$@"
