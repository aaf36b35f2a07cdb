#!/usr/bin/perl
# The supervised process of bench/restart's hang test: a tiny HTTP server
# on 127.0.0.1:PORT answering every request `200 ok`. Once it listens it
# appends its pid to STARTS and writes it to PIDFILE. SIGSTOP makes it hang:
# the kernel still accepts connections, nothing answers.
#   hangsrv.pl PORT PIDFILE STARTS [bg]    (bg: fork, the parent returns)
#   hangsrv.pl stop PIDFILE                 (kill -9 the server it names)
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use POSIX ();

if (@ARGV == 2 && $ARGV[0] eq 'stop') {
    open my $f, '<', $ARGV[1] or exit 0;
    my $pid = <$f>;
    kill 'KILL', $1 if defined $pid && $pid =~ /^(\d+)/;
    exit 0;
}
my ($port, $pidfile, $starts, $bg) = @ARGV;
die "usage: hangsrv.pl PORT PIDFILE STARTS [bg]\n" unless defined $starts;
if (defined $bg && $bg eq 'bg') {
    defined(my $child = fork) or die "fork: $!\n";
    exit 0 if $child;
    POSIX::setsid();
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
}
$0 = "hangsrv $port";
my $listen;
# The previous server may still be dying (killed, not yet reaped): retry
# for up to 2 s.
for (1 .. 200) {
    $listen = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
        Listen => 128, ReuseAddr => 1,
    ) and last;
    select(undef, undef, undef, 0.01);
}
die "hangsrv: cannot listen on 127.0.0.1:$port: $!\n" unless $listen;
$SIG{PIPE} = 'IGNORE';
for my $file ([$starts, '>>'], [$pidfile, '>']) {
    open my $f, $file->[1], $file->[0] or die "hangsrv: $file->[0]: $!\n";
    print $f "$$\n";
    close $f;
}
while (1) {
    my $client = $listen->accept or next;
    # Read the request head, at most 1 s; then answer and close.
    my $sel = IO::Select->new($client);
    my $head = '';
    while ($head !~ /\r?\n\r?\n/ && length $head < 16384 && $sel->can_read(1)) {
        my $n = sysread $client, $head, 4096, length $head;
        last unless $n;
    }
    syswrite $client, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    close $client;
}
