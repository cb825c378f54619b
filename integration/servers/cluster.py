"""The cluster machinery: a group of ``ServerProcess`` members that form one service."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar, Generic, Self, TypeVar

from .process import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    LOG_TAIL_LINES,
    Server,
    ServerProcess,
)

MemberType = TypeVar("MemberType", bound=ServerProcess)


class ServerCluster(Server, Generic[MemberType]):
    """A group of member processes that together form one service.

    The base owns the layout: the cluster directory (a temporary one unless given) holds
    one directory per member (``member1`` .. ``memberN``), made by ``make_member``, which
    subclasses implement. What every member must know of the others (peer ports, the
    initial member list) is decided first, in ``plan_members``.
    ``member_type.check_installed()`` runs before any directory is created.

    Healthy when a majority of members runs, every running member is healthy and one
    of them is the leader (``ServerProcess.is_leader``). Members are killed, paused and
    restarted one by one through ``members``; a restarted member keeps its ports and
    data directory, so it rejoins.
    """

    member_type: ClassVar[type[ServerProcess]]
    scheme: ClassVar[str]
    #: Start each member only once the one before is healthy (else all at once: a
    #: member of a quorum system waits for its peers before it is healthy).
    start_one_by_one: ClassVar[bool] = False

    def __init__(
        self,
        size: int = 3,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        self.member_type.check_installed()  # before creating directories
        self.plan_members(size)
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.members: list[MemberType] = self.make_members(size)

    def plan_members(self, size: int) -> None:
        """Decide what all ``size`` members must know of each other (ports, names)."""

    def make_members(self, size: int) -> list[MemberType]:
        """The members, numbered from 1, each in its own directory."""
        return [
            self.make_member(number, self.directory / f"member{number}")
            for number in range(1, size + 1)
        ]

    @abc.abstractmethod
    def make_member(self, number: int, directory: Path) -> MemberType:
        """Member ``number`` (from 1) living in ``directory``."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://" + ",".join(self.endpoints)

    @property
    def quorum(self) -> int:
        """Members needed for a majority."""
        return len(self.members) // 2 + 1

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` client endpoints of all members."""
        return [member.endpoint for member in self.members]

    def running_members(self) -> list[MemberType]:
        """Members whose process exists and is not paused."""
        return [member for member in self.members if member.running and not member.paused]

    def leader(self) -> MemberType | None:
        """The running member that says it is the leader, if one does."""
        return next((member for member in self.running_members() if member.is_leader()), None)

    def start(self, wait: bool = True) -> Self:
        try:
            for member in self.members:
                if not member.running:
                    member.start(wait=wait and self.start_one_by_one)
            if wait:
                self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop every member, the last started first."""
        for member in reversed(self.members):
            member.stop(timeout)

    def members_healthy(self) -> bool:
        """Whether a quorum runs and every running member is healthy."""
        running = self.running_members()
        return len(running) >= self.quorum and all(member.is_healthy() for member in running)

    def is_healthy(self) -> bool:
        return self.members_healthy() and self.leader() is not None

    def check_alive(self) -> None:
        for member in self.members:
            member.check_alive()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(member.log_tail(lines) for member in self.members)
